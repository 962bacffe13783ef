"""The escalation queue and an escalation's detail page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK, DATABASE
from bot.services import clinician_texts, flow_store, history, holds, queue
from bot.services.escalations import SLA
from bot.services.scheduling import quiet_now
from bot.services.sessions import SessionUser
from bot.web import audit_log, charts
from bot.web.outbound import send_now
from bot.web.pages import notices
from bot.web.pages.common import (
    MAX_ID,
    form_with_csrf,
    path_int,
    record,
    render,
    require_user,
    waiting,
)
from bot.web.reasons import plain
from db.enums import CheckinStatus, Disposition, EscalationStatus, MessageStatus, Severity
from db.models import Checkin, Escalation, Patient, User
from flows import describe

DISPOSITIONS = {
    Disposition.REACHED_PATIENT: "Reached the patient",
    Disposition.LEFT_MESSAGE: "Left a message",
    Disposition.SENT_TO_EMERGENCY_CARE: "Sent to emergency care",
    Disposition.NO_ACTION_NEEDED: "No action needed",
    Disposition.OTHER: "Other",
}


def _about(patient_id: int | None) -> dict[str, object]:
    """An escalation event's details: its patient, for the audit page's patient filter."""
    return {"patient_id": patient_id} if patient_id is not None else {}


@dataclass(frozen=True, slots=True)
class QueueView:
    rows: list[dict[str, object]]
    filters: dict[str, str]
    more: bool
    counts: dict[str, int]
    mine: int
    resolved: bool


async def _rows(request: web.Request, user: SessionUser, *, refresh: bool = False) -> QueueView:
    """The rows shown (at most ``queue.QUEUE_LIMIT``), the filters, whether more match, and
    the counts per severity.

    Each row's response target is counted from when the item was raised (pages do not
    reset it); an open item past it is overdue, shown by its severity so an overdue
    moderate never outshouts a high. Audited ``escalation.list`` (one event per request,
    also the refresh script's): the subject is the patient when the list is filtered to
    one, the details the count and the filters applied."""
    filters = {
        k: request.query.get(k, "").replace("\x00", "").strip()[:80]
        for k in ("severity", "status", "q")
    }
    filters["mine"] = "1" if request.query.get("mine") == "1" else ""
    statuses = [EscalationStatus.OPEN, EscalationStatus.CLAIMED]
    if filters["status"] in {s.value for s in EscalationStatus}:
        statuses = [EscalationStatus(filters["status"])]
    severity = (
        Severity(filters["severity"])
        if filters["severity"] in {s.value for s in Severity}
        else None
    )
    raw_patient = request.query.get("patient", "")
    patient_id = (
        int(raw_patient)
        if raw_patient.isascii()
        and raw_patient.isdigit()
        and len(raw_patient) <= 10
        and int(raw_patient) <= MAX_ID
        else None
    )
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].read() as session:
        found_ids = None
        if filters["q"]:
            found_ids = [
                p.id for p in await history.search_patients(session=session, q=filters["q"])
            ]
        rows = (
            await session.scalars(
                queue.queue_query(
                    statuses=statuses,
                    severity=severity,
                    patient_id=patient_id,
                    patient_ids=found_ids,
                    claimed_by=user.user_id if filters["mine"] else None,
                    limit=queue.QUEUE_LIMIT + 1,
                )
            )
        ).all()
        more = len(rows) > queue.QUEUE_LIMIT
        rows = rows[: queue.QUEUE_LIMIT]
        patient_ids = {e.patient_id for e in rows if e.patient_id}
        users = {u for e in rows for u in (e.claimed_by, e.resolved_by) if u}
        patients: dict[int, tuple[str, str]] = (
            {
                pid: (name, zone)
                for pid, name, zone in (
                    await session.execute(
                        select(Patient.id, Patient.first_name, Patient.timezone).where(
                            Patient.id.in_(patient_ids)
                        )
                    )
                ).all()
            }
            if patient_ids
            else {}
        )
        staff: dict[int, str] = (
            {
                uid: name or email
                for uid, name, email in (
                    await session.execute(
                        select(User.id, User.name, User.email).where(User.id.in_(users))
                    )
                ).all()
            }
            if users
            else {}
        )
        # the counts head the full page; its 15-second refresh replaces only the rows
        counts, mine = ({}, 0) if refresh else await queue.open_counts(session, user.user_id)
    details: dict[str, object] = {"count": len(rows), "status": [str(s) for s in statuses]}
    if severity is not None:
        details["severity"] = str(severity)
    if filters["q"]:
        details["query"] = audit_log.masked_query(filters["q"])
    if refresh:
        details["refresh"] = True
    subject = "" if patient_id is None else patient_id
    await audit_log.write(request, user, "escalation.list", "patient", subject, details)
    out = []
    for e in rows:
        target = e.created_at + SLA[e.severity]
        overdue = e.status is EscalationStatus.OPEN and target <= now
        name, zone = patients.get(e.patient_id or 0, ("", ""))
        out.append(
            {
                "e": e,
                "reason": plain(e.reason),
                "patient": name or "Unknown number",
                "patient_id": e.patient_id if name else None,
                "patient_time": _local_time(zone, now) if zone else "",
                "waiting": waiting(e.created_at, now),
                "target": target,
                "overdue": overdue,
                "claimed_by": staff.get(e.claimed_by or 0, ""),
                "resolved_by": staff.get(e.resolved_by or 0, ""),
                "disposition": DISPOSITIONS.get(e.disposition, "") if e.disposition else "",
            }
        )
    return QueueView(out, filters, more, counts, mine, statuses == [EscalationStatus.RESOLVED])


async def queue_page(request: web.Request) -> web.Response:
    user = require_user(request)
    view = await _rows(request, user)
    return render(
        request,
        "queue.html",
        {
            "v": view,
            "rows": view.rows,
            "more": view.more,
            "limit": queue.QUEUE_LIMIT,
            "filters": view.filters,
            "severities": list(Severity),
            "statuses": list(EscalationStatus),
            "targets": {str(s): _duration(SLA[s]) for s in Severity},
        },
    )


async def queue_rows(request: web.Request) -> web.Response:
    """The table body alone, for the page's refresh script."""
    user = require_user(request)
    view = await _rows(request, user, refresh=True)
    return render(
        request,
        "_queue_rows.html",
        {"v": view, "rows": view.rows, "more": view.more, "limit": queue.QUEUE_LIMIT},
    )


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


async def escalation_page(
    request: web.Request,
    *,
    text_error: str = "",
    draft: str = "",
    confirm_night: bool = False,
    status: int = 200,
) -> web.Response:
    """The escalation with what a clinician needs to act; ``text_error``, ``draft`` and
    ``confirm_night`` re-show the text form after a refusal or before a night-time send."""
    user = require_user(request)
    escalation_id = path_int(request)
    async with request.app[DATABASE].write() as session:
        view = await history.escalation_view(session=session, escalation_id=escalation_id)
        if view is None:
            raise web.HTTPNotFound(text="No such escalation.")
        patient_id = view.escalation.patient_id
        hold = await holds.hold_of(session, patient_id) if patient_id is not None else None
        running = await _running_safety_flow(session, patient_id)
        staff = (
            await session.execute(
                select(User.id, User.name, User.email)
                .where(User.active.is_(True))
                .order_by(User.name, User.email)
            )
        ).all()
        record(
            request,
            session,
            user,
            "escalation.view",
            "escalation",
            escalation_id,
            **_about(patient_id),
        )
    now = request.app[CLOCK].now()
    e = view.escalation
    patient = view.patient
    return render(
        request,
        "escalation.html",
        {
            "v": view,
            "e": e,
            "reason": plain(e.reason),
            "waiting": waiting(e.created_at, now),
            "overdue": e.status is EscalationStatus.OPEN and e.created_at + SLA[e.severity] <= now,
            "target": e.created_at + SLA[e.severity],
            "charts": {
                name: charts.trend_svg(name, points) for name, points in view.trends.items()
            },
            "dispositions": DISPOSITIONS,
            "hold": hold,
            "pages_failed": any(
                m.status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)
                for m, _u in view.pages
            ),
            "mine": e.claimed_by == user.user_id,
            "running": running,
            "staff": [(uid, name or email) for uid, name, email in staff if uid != e.claimed_by],
            "patient_time": _local_time(patient.timezone, now) if patient else "",
            "quiet": quiet_now(patient, now) if patient else False,
            "can_text": patient is not None and clinician_texts.refusal(patient) is None,
            "text_error": text_error,
            "draft": draft,
            "confirm_night": confirm_night,
        },
        status=status,
    )


def _local_time(zone: str, now: datetime) -> str:
    local = now.astimezone(ZoneInfo(zone))
    return f"{local:%H:%M} {local.tzname()}"


_QUEUE_ERRORS = {
    "already_claimed": "already_claimed",
    "resolved": "already_resolved",
    "not_claimed": "not_claimed",
    "forbidden": "not_yours",
}
_DONE = {
    "claim": "claimed",
    "release": "released",
    "assign": "assigned",
    "take_over": "taken_over",
}


async def _running_safety_flow(session: AsyncSession, patient_id: int | None) -> str | None:
    """The title of a safety check-in still running with the patient, if one is: resolving
    while it runs may close an alert the patient is still answering."""
    if patient_id is None:
        return None
    running = (
        await session.scalars(
            select(Checkin).where(
                Checkin.patient_id == patient_id, Checkin.status == CheckinStatus.ACTIVE
            )
        )
    ).all()
    for c in running:
        flow = await flow_store.of_checkin(session=session, checkin=c)
        if flow is not None and any(q.safety for q in describe.questions(flow).values()):
            return flow.title
    return None


async def _act(request: web.Request, action: str) -> web.Response:
    user = require_user(request)
    form = await form_with_csrf(request, user)
    escalation_id = path_int(request)
    here = f"/escalations/{escalation_id}"
    now = request.app[CLOCK].now()
    try:
        async with request.app[DATABASE].write() as session:
            if action == "claim":
                found = await queue.claim(
                    session=session, escalation_id=escalation_id, user_id=user.user_id, now=now
                )
            elif action == "release":
                found = await queue.release(
                    session=session,
                    escalation_id=escalation_id,
                    user_id=user.user_id,
                    is_admin=user.is_admin,
                )
            elif action in ("assign", "take_over"):
                target = form.get("user_id", "") if action == "assign" else str(user.user_id)
                if not (target.isascii() and target.isdigit()) or len(target) > 10:
                    raise notices.to(here, error="choose_clinician")
                found = await queue.assign(
                    session=session,
                    escalation_id=escalation_id,
                    to_user_id=int(target),
                    by_user_id=user.user_id,
                    is_admin=user.is_admin,
                    now=now,
                    take_over=action == "take_over",
                )
            else:
                try:
                    disposition = Disposition(form.get("disposition", ""))
                except ValueError:
                    raise notices.to(here, error="choose_disposition") from None
                current = await session.get(Escalation, escalation_id)
                unconfirmed = form.get("confirm_running") != "yes"
                if (
                    current is not None
                    and unconfirmed
                    and await _running_safety_flow(session, current.patient_id)
                ):
                    raise notices.to(here, error="confirm_running")
                found = await queue.resolve(
                    session=session,
                    escalation_id=escalation_id,
                    user_id=user.user_id,
                    is_admin=user.is_admin,
                    disposition=disposition,
                    note=form.get("note", "")[:4000],
                    now=now,
                )
            details = _about(found.patient_id)
            if action == "assign":
                details["to_user_id"] = found.claimed_by
            record(
                request,
                session,
                user,
                f"escalation.{action}",
                "escalation",
                escalation_id,
                **details,
            )
    except queue.QueueError as exc:
        if exc.status == 404:
            raise web.HTTPNotFound(text="No such escalation.") from exc
        raise notices.to(here, error=_QUEUE_ERRORS.get(exc.code, "choose_clinician")) from exc
    if action == "resolve":
        raise notices.to("/", notice="resolved")
    raise notices.to(here, notice=_DONE[action])


async def claim(request: web.Request) -> web.Response:
    return await _act(request, "claim")


async def release(request: web.Request) -> web.Response:
    return await _act(request, "release")


async def resolve(request: web.Request) -> web.Response:
    return await _act(request, "resolve")


async def assign(request: web.Request) -> web.Response:
    return await _act(request, "assign")


async def take_over(request: web.Request) -> web.Response:
    return await _act(request, "take_over")


class _ShowAgain(Exception):
    """Re-show the alert's page with the text form (after the write has ended: the page
    reads on its own connection, and SQLite allows one writer)."""

    def __init__(self, **page: Any) -> None:
        super().__init__("show the page again")
        self.page = page


async def text_patient(request: web.Request) -> web.Response:
    """A clinician's text from the escalation page; at night it asks first."""
    user = require_user(request)
    form = await form_with_csrf(request, user)
    escalation_id = path_int(request)
    here = f"/escalations/{escalation_id}"
    now = request.app[CLOCK].now()
    body = form.get("body", "")
    try:
        async with request.app[DATABASE].write() as session:
            found = await session.get(Escalation, escalation_id)
            if found is None:
                raise web.HTTPNotFound(text="No such escalation.")
            patient = await session.get(Patient, found.patient_id) if found.patient_id else None
            if patient is None:
                raise _ShowAgain(text_error="This alert has no patient to text.", status=422)
            if quiet_now(patient, now) and form.get("confirm_night") != "yes":
                raise _ShowAgain(draft=body, confirm_night=True)
            try:
                sent = await clinician_texts.send_to_patient(
                    session=session,
                    patient=patient,
                    body=body,
                    user_id=user.user_id,
                    now=now,
                    address=audit_log.source(request),
                    escalation_id=escalation_id,
                )
            except clinician_texts.TextRefused as exc:
                raise _ShowAgain(text_error=str(exc), draft=body, status=exc.status) from exc
    except _ShowAgain as again:
        return await escalation_page(request, **again.page)
    send_now(request.app, [sent.message.id])
    raise notices.to(here, notice="text_queued")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", queue_page)
    r.add_get("/queue/rows", queue_rows)
    r.add_get("/escalations/{id}", escalation_page)
    r.add_post("/escalations/{id}/claim", claim)
    r.add_post("/escalations/{id}/release", release)
    r.add_post("/escalations/{id}/resolve", resolve)
    r.add_post("/escalations/{id}/assign", assign)
    r.add_post("/escalations/{id}/take-over", take_over)
    r.add_post("/escalations/{id}/text", text_patient)
