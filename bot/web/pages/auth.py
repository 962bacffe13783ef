"""Sign in and sign out."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import sessions
from bot.web.audit_log import source
from bot.web.pages.common import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    current_user,
    form_with_csrf,
    new_login_csrf,
    render,
    require_user,
    session_secret,
    set_session_cookie,
)


def _safe_next(target: str | None) -> str:
    """Only local paths: an open redirect after login would be a phishing aid."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        # browsers read "/\\evil.example" as "//evil.example"
        or "\\" in target
        or not target.isprintable()
    ):
        return "/"
    return target


def _login_page(
    request: web.Request, *, error: str = "", email: str = "", status: int = 200
) -> web.Response:
    token = new_login_csrf()
    response = render(
        request,
        "login.html",
        {
            "error": error,
            "email": email,
            "login_csrf": token,
            "next": _safe_next(request.query.get("next")),
        },
        status=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS].secure_cookies,
        path="/login",
        max_age=3600,
    )
    return response


async def login_form(request: web.Request) -> web.Response:
    """Always the form: signing in again (e.g. as someone else) replaces the session."""
    return _login_page(request)


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    email = str(form.get("email", ""))[:254].replace("\x00", "")
    password = str(form.get("password", ""))[:1024]
    posted = str(form.get("login_csrf", ""))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not posted or not cookie or not hmac.compare_digest(posted, cookie):
        return _login_page(
            request, error="The sign-in form expired. Please try again.", email=email, status=403
        )
    old = current_user(request)
    outcome = await sessions.login(
        db=request.app[DATABASE],
        email=email,
        password=password,
        address=source(request),
        now=request.app[CLOCK].now(),
        secret=session_secret(request),
        replacing=old.session_id if old is not None else None,
    )
    if outcome.token is None:
        return _login_page(
            request, error=outcome.error, email=email, status=429 if outcome.throttled else 401
        )
    token = outcome.token
    target = _safe_next(str(form.get("next", "")))
    response = web.HTTPSeeOther(target)
    set_session_cookie(request, response, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.Response:
    user = require_user(request)
    await form_with_csrf(request, user)
    async with request.app[DATABASE].write() as session:
        await sessions.logout(
            session=session,
            session_id=user.session_id,
            now=request.app[CLOCK].now(),
            address=source(request),
        )
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def setup(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
