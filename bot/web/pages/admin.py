"""Admin pages: the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select

from bot.appkeys import DATABASE, SETTINGS
from bot.web.audit_log import about_patient
from bot.web.pages.common import MAX_ID, render, require_user
from db.models import AuditEvent, User

AUDIT_LIMIT = 500
FILTERS = ("action", "actor", "patient", "subject", "from", "to")


def _day(value: str, zone: ZoneInfo) -> datetime | None:
    """The start of a day in the clinic's zone, the zone the page shows times in."""
    try:
        return datetime.fromisoformat(value).replace(tzinfo=zone) if value else None
    except ValueError:
        return None


def _id(value: str, prefix: str = "") -> int | None:
    """A whole-number id, also written ``<prefix>:<id>``; ``None`` if it is not one."""
    if prefix and value.lower().startswith(prefix + ":"):
        value = value[len(prefix) + 1 :].strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > MAX_ID:
        return None
    return int(value)


async def audit_page(request: web.Request) -> web.Response:
    """Newest events first, filtered by action (a prefix), actor (email or user id), patient
    (the events whose subject is the patient, and those on the patient's escalations and
    check-ins), subject (``type`` or ``type:id``) and UTC days."""
    require_user(request, admin=True)
    f = {k: request.query.get(k, "").strip()[:120] for k in FILTERS}
    errors: list[str] = []
    query = (
        select(AuditEvent, User.email)
        .outerjoin(User, User.id == AuditEvent.actor_id)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(AUDIT_LIMIT)
    )
    if f["action"]:
        query = query.where(AuditEvent.action.like(f"{f['action']}%"))
    if f["actor"]:
        actor_id = _id(f["actor"], "user")
        if actor_id is not None:
            query = query.where(AuditEvent.actor_id == actor_id)
        else:
            query = query.where(User.email.ilike(f"%{f['actor']}%"))
    if f["patient"]:
        patient_id = _id(f["patient"], "patient")
        if patient_id is None:
            errors.append("Patient: enter the patient's number, like 12.")
        else:
            query = query.where(about_patient(patient_id))
    if f["subject"]:
        kind, _, ident = f["subject"].partition(":")
        query = query.where(AuditEvent.subject_type == kind)
        if ident:
            query = query.where(AuditEvent.subject_id == ident)
    zone = ZoneInfo(request.app[SETTINGS].clinic_timezone)
    start, end = _day(f["from"], zone), _day(f["to"], zone)
    if start:
        query = query.where(AuditEvent.at >= start)
    if end:
        query = query.where(AuditEvent.at < end + timedelta(days=1))
    rows = []
    if not errors:
        async with request.app[DATABASE].read() as session:
            rows = list((await session.execute(query)).all())
    return render(
        request,
        "audit.html",
        {"rows": rows, "f": f, "limit": AUDIT_LIMIT, "errors": errors},
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/audit", audit_page)
