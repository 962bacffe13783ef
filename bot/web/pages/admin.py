"""Admin pages: the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import select

from bot.appkeys import DATABASE
from bot.web.pages.common import render, require_user
from db.models import AuditEvent, User

AUDIT_LIMIT = 500


def _day(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


async def audit_page(request: web.Request) -> web.Response:
    require_user(request, admin=True)
    f = {
        k: request.query.get(k, "").strip()[:120]
        for k in ("action", "actor", "subject", "from", "to")
    }
    query = (
        select(AuditEvent, User.email)
        .outerjoin(User, User.id == AuditEvent.actor_id)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(AUDIT_LIMIT)
    )
    if f["action"]:
        query = query.where(AuditEvent.action.like(f"{f['action']}%"))
    if f["actor"]:
        query = query.where(User.email.ilike(f"%{f['actor']}%"))
    if f["subject"]:
        kind, _, ident = f["subject"].partition(":")
        query = query.where(AuditEvent.subject_type == kind)
        if ident:
            query = query.where(AuditEvent.subject_id == ident)
    start, end = _day(f["from"]), _day(f["to"])
    if start:
        query = query.where(AuditEvent.at >= start)
    if end:
        query = query.where(AuditEvent.at < end + timedelta(days=1))
    async with request.app[DATABASE].read() as session:
        rows = (await session.execute(query)).all()
    return render(request, "audit.html", {"rows": rows, "f": f, "limit": AUDIT_LIMIT})


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/audit", audit_page)
