"""What every page handler needs: the signed-in user, CSRF, rendering, audit."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import sessions
from bot.services.sessions import SessionUser
from bot.web import audit_log
from bot.web.api.errors import Handler
from bot.web.pages import notices
from db.models import AuditEvent

_AUDIT_INSERT = insert(AuditEvent)
COOKIE = "aftercare_session"
LOGIN_CSRF_COOKIE = "aftercare_login_csrf"
USER = web.RequestKey("user", SessionUser)
PAGE_PREFIXES_SKIPPED = ("/api/", "/twilio/", "/static/", "/healthz", "/metrics")
# Fetched by a page's own script on a timer: not user activity, so no idle-timeout extension.
# polled by the pages themselves: not activity, so an unattended screen still logs off
PASSIVE_PATHS = frozenset({"/queue/rows", "/demo/phone/messages"})


@web.middleware
async def page_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Loads the signed-in user for pages; expired sessions simply are not loaded.

    One autocommit read per page; the idle-expiry touch is a write only when due.
    """
    if request.path.startswith(PAGE_PREFIXES_SKIPPED):
        return await handler(request)
    token = request.cookies.get(COOKIE)
    if token:
        db = request.app[DATABASE]
        async with db.plain_reads() as conn:
            found = await sessions.lookup(
                conn=conn,
                token=token,
                now=request.app[CLOCK].now(),
                touch=request.path not in PASSIVE_PATHS,
                secret=session_secret(request),
            )
        if found is not None:
            if found.touch is not None:  # at most every TOUCH_EVERY per session
                async with db.write() as session:
                    await sessions.write_touch(
                        session=session,
                        session_id=found.user.session_id,
                        last_seen_at=found.touch[0],
                        idle_expires_at=found.touch[1],
                    )
            request[USER] = found.user
    return await handler(request)


def session_secret(request: web.Request) -> str:
    """The key session tokens are hashed under (``SECRET_KEY``)."""
    return request.app[SETTINGS].secret_key or ""


def current_user(request: web.Request) -> SessionUser | None:
    return request.get(USER)


def require_user(request: web.Request, *, admin: bool = False) -> SessionUser:
    user = current_user(request)
    if user is None:
        target = request.path_qs if request.method == "GET" else "/"
        raise web.HTTPSeeOther(f"/login?next={quote(target)}")
    if admin and not user.is_admin:
        raise web.HTTPForbidden(text="This page is for admins.")
    return user


async def form_with_csrf(request: web.Request, user: SessionUser) -> dict[str, str]:
    """The posted form, after checking its CSRF token (403 otherwise)."""
    form = await request.post()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not user.csrf_ok(token):
        raise web.HTTPForbidden(
            text="The form expired or did not come from this site. Reload the page and try again."
        )
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if any("\x00" in k or "\x00" in v for k, v in fields.items()):
        raise web.HTTPBadRequest(text="The form contains a NUL character; remove it and try again.")
    return fields


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    user = current_user(request)
    settings = request.app[SETTINGS]
    notice, error = notices.shown(request)
    base = {
        "notice": notice,
        "error": error,
        "user": user,
        "csrf_token": user.csrf_token if user else "",
        "clinic_name": settings.clinic_name or "aftercare",
        "demo": settings.demo,
        "now": request.app[CLOCK].now(),
        "path": request.path,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def record(
    request: web.Request,
    session: AsyncSession,
    user: SessionUser,
    action: str,
    subject_type: str,
    subject_id: object,
    **details: object,
) -> None:
    audit_log.record(request, session, user, action, subject_type, subject_id, **details)


async def record_view(
    request: web.Request,
    conn: AsyncConnection,
    user: SessionUser,
    action: str,
    subject_type: str,
    subject_id: object,
) -> None:
    """``record`` for a read-only page on ``Database.plain_reads``' autocommit connection: one
    INSERT, its own transaction, no ORM unit of work. On SQLite every write still goes
    through ``Database.write`` (its lock and ``BEGIN IMMEDIATE``)."""
    values = audit_log.row(request, user, action, subject_type, subject_id)
    db = request.app[DATABASE]
    if db.is_sqlite:
        async with db.write() as session:
            await (await session.connection()).execute(_AUDIT_INSERT, values)
    else:
        await conn.execute(_AUDIT_INSERT, values)


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Lax",
        secure=request.app[SETTINGS].secure_cookies,
        path="/",
        max_age=int(sessions.ABSOLUTE_TIMEOUT.total_seconds()),
    )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


MAX_ID = 2**31 - 1  # ids are 32-bit in the database: a larger one names no row


def path_int(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > MAX_ID:
        raise web.HTTPNotFound(text="Not found.")
    return int(raw)


def waiting(since: datetime, now: datetime) -> str:
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 60:
        return "just now"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} days"
