"""The escalation queue and an escalation's detail page."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from bot.appkeys import CLOCK, DATABASE
from bot.services import history, holds, queue
from bot.services.sessions import SessionUser
from bot.web import audit_log, charts
from bot.web.pages.common import form_with_csrf, path_int, record, render, require_user, waiting
from bot.web.reasons import plain
from db.enums import Disposition, EscalationStatus, MessageStatus, Severity
from db.models import Patient, User

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


async def _rows(
    request: web.Request, user: SessionUser, *, refresh: bool = False
) -> tuple[list[dict[str, object]], dict[str, str], bool]:
    """The rows shown (at most ``queue.QUEUE_LIMIT``), the filters, and whether more match.

    Audited ``escalation.list`` (one event per request, also the refresh script's): the
    subject is the patient when the list is filtered to one, the details the count and the
    filters applied."""
    filters = {k: request.query.get(k, "") for k in ("severity", "status", "patient")}
    statuses = [EscalationStatus.OPEN, EscalationStatus.CLAIMED]
    if filters["status"] in {s.value for s in EscalationStatus}:
        statuses = [EscalationStatus(filters["status"])]
    severity = (
        Severity(filters["severity"])
        if filters["severity"] in {s.value for s in Severity}
        else None
    )
    patient_id = (
        int(filters["patient"])
        if (filters["patient"].isascii() and filters["patient"].isdigit())
        and len(filters["patient"]) < 18
        else None
    )
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].read() as session:
        rows = (
            await session.scalars(
                queue.queue_query(
                    statuses=statuses,
                    severity=severity,
                    patient_id=patient_id,
                    limit=queue.QUEUE_LIMIT + 1,
                )
            )
        ).all()
        more = len(rows) > queue.QUEUE_LIMIT
        rows = rows[: queue.QUEUE_LIMIT]
        patient_ids = {e.patient_id for e in rows if e.patient_id}
        users = {e.claimed_by for e in rows if e.claimed_by}
        names: dict[int, str] = (
            {
                patient_id: first_name
                for patient_id, first_name in (
                    await session.execute(
                        select(Patient.id, Patient.first_name).where(Patient.id.in_(patient_ids))
                    )
                ).all()
            }
            if patient_ids
            else {}
        )
        claimers: dict[int, str] = (
            {
                user_id: name
                for user_id, name in (
                    await session.execute(select(User.id, User.name).where(User.id.in_(users)))
                ).all()
            }
            if users
            else {}
        )
    details: dict[str, object] = {"count": len(rows), "status": [str(s) for s in statuses]}
    if severity is not None:
        details["severity"] = str(severity)
    if refresh:
        details["refresh"] = True
    subject = "" if patient_id is None else patient_id
    await audit_log.write(request, user, "escalation.list", "patient", subject, details)
    out = []
    for e in rows:
        overdue = (
            e.status is not EscalationStatus.RESOLVED
            and e.sla_due_at is not None
            and e.sla_due_at <= now
        )
        out.append(
            {
                "e": e,
                "reason": plain(e.reason),
                "patient": names.get(e.patient_id or 0, "Unknown number"),
                "waiting": waiting(e.created_at, now),
                "overdue": overdue,
                "claimed_by": claimers.get(e.claimed_by or 0, ""),
            }
        )
    return out, filters, more


async def queue_page(request: web.Request) -> web.Response:
    user = require_user(request)
    rows, filters, more = await _rows(request, user)
    return render(
        request,
        "queue.html",
        {
            "rows": rows,
            "more": more,
            "limit": queue.QUEUE_LIMIT,
            "filters": filters,
            "severities": list(Severity),
            "statuses": list(EscalationStatus),
        },
    )


async def queue_rows(request: web.Request) -> web.Response:
    """The table body alone, for the page's refresh script."""
    user = require_user(request)
    rows, _filters, more = await _rows(request, user, refresh=True)
    return render(
        request, "_queue_rows.html", {"rows": rows, "more": more, "limit": queue.QUEUE_LIMIT}
    )


async def escalation_page(request: web.Request) -> web.Response:
    user = require_user(request)
    escalation_id = path_int(request)
    async with request.app[DATABASE].write() as session:
        view = await history.escalation_view(session=session, escalation_id=escalation_id)
        if view is None:
            raise web.HTTPNotFound(text="No such escalation.")
        patient_id = view.escalation.patient_id
        hold = await holds.hold_of(session, patient_id) if patient_id is not None else None
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
    return render(
        request,
        "escalation.html",
        {
            "v": view,
            "e": e,
            "reason": plain(e.reason),
            "waiting": waiting(e.created_at, now),
            "overdue": e.status is not EscalationStatus.RESOLVED
            and e.sla_due_at is not None
            and e.sla_due_at <= now,
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
            "error": request.query.get("error", ""),
        },
    )


async def _act(request: web.Request, action: str) -> web.Response:
    user = require_user(request)
    form = await form_with_csrf(request, user)
    escalation_id = path_int(request)
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
            else:
                try:
                    disposition = Disposition(form.get("disposition", ""))
                except ValueError:
                    raise web.HTTPSeeOther(
                        f"/escalations/{escalation_id}?error=Choose+a+disposition"
                    ) from None
                found = await queue.resolve(
                    session=session,
                    escalation_id=escalation_id,
                    user_id=user.user_id,
                    is_admin=user.is_admin,
                    disposition=disposition,
                    note=form.get("note", "")[:4000],
                    now=now,
                )
            record(
                request,
                session,
                user,
                f"escalation.{action}",
                "escalation",
                escalation_id,
                **_about(found.patient_id),
            )
    except queue.QueueError as exc:
        if exc.status == 404:
            raise web.HTTPNotFound(text="No such escalation.") from exc
        raise web.HTTPSeeOther(
            f"/escalations/{escalation_id}?error={exc.message.replace(' ', '+')}"
        ) from exc
    raise web.HTTPSeeOther("/" if action == "resolve" else f"/escalations/{escalation_id}")


async def claim(request: web.Request) -> web.Response:
    return await _act(request, "claim")


async def release(request: web.Request) -> web.Response:
    return await _act(request, "release")


async def resolve(request: web.Request) -> web.Response:
    return await _act(request, "resolve")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", queue_page)
    r.add_get("/queue/rows", queue_rows)
    r.add_get("/escalations/{id}", escalation_page)
    r.add_post("/escalations/{id}/claim", claim)
    r.add_post("/escalations/{id}/release", release)
    r.add_post("/escalations/{id}/resolve", resolve)
