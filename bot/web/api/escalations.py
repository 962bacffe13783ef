"""The escalation queue over the API."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK, DATABASE
from bot.services import queue
from bot.web import audit_log
from bot.web.api import schemas, serialize
from bot.web.api.auth import STAFF, Principal, require
from bot.web.api.errors import ApiError, invalid, json_body
from bot.web.api.patients import path_id
from db.enums import EscalationStatus, Severity
from db.models import Escalation, User

ESCALATION_ITEMS = web.AppKey("escalation_items", serialize.EscalationItems)


def _filters(request: web.Request) -> dict[str, object]:
    out: dict[str, object] = {}
    status = request.query.get("status")
    if status is not None:
        try:
            out["statuses"] = [EscalationStatus(s) for s in status.split(",")]
        except ValueError as exc:
            raise invalid("status", "must be open, claimed or resolved (comma-separated)") from exc
    severity = request.query.get("severity")
    if severity is not None:
        try:
            out["severity"] = Severity(severity)
        except ValueError as exc:
            raise invalid("severity", "must be critical, high, moderate or low") from exc
    patient = request.query.get("patient_id")
    if patient is not None:
        if (
            not (patient.isascii() and patient.isdigit())
            or len(patient) > 10
            or int(patient) > schemas.MAX_ID
        ):
            raise invalid("patient_id", f"must be a whole number up to {schemas.MAX_ID}")
        out["patient_id"] = int(patient)
    return out


def _page(request: web.Request) -> tuple[int, queue.QueueCursor | None]:
    """``limit`` and ``after``: the page's size and where it starts."""
    limit = queue.QUEUE_LIMIT
    text = request.query.get("limit")
    if text is not None:
        # at most 3 digits: int() of a huge digit string is itself an error
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
            1 <= int(text) <= queue.QUEUE_MAX_LIMIT
        ):
            raise invalid("limit", f"must be a whole number from 1 to {queue.QUEUE_MAX_LIMIT}")
        limit = int(text)
    after = request.query.get("after", "")
    if not after:
        return limit, None
    try:
        return limit, queue.QueueCursor.parse(after)
    except ValueError as exc:
        raise invalid("after", "must be the next value of a previous page") from exc


async def list_escalations(request: web.Request) -> web.Response:
    """The queue, polled by every open client: the token check, the rows and the audit event
    (``escalation.list``: count and filters; the subject the patient when filtered to one) on
    one autocommit Core connection, the JSON written from plain rows."""
    async with request.app[DATABASE].plain_reads() as conn:
        who = await require(request, *STAFF, conn=conn)
        limit, after = _page(request)
        filters = _filters(request)
        # one row more than the page: whether a next page exists
        query, params = queue.queue_rows_query(
            **filters,  # type: ignore[arg-type]
            limit=limit + 1,
            after=after,
        )
        rows = (await conn.execute(query, params)).all()
        patient_id = filters.get("patient_id")
        await audit_log.write(
            request,
            who,
            "escalation.list",
            "patient",
            "" if patient_id is None else patient_id,
            _list_details(filters, min(len(rows), limit), after is not None),
            conn=conn,
        )
    following = queue.QueueCursor.after_row(rows[limit - 1]).token() if len(rows) > limit else None
    return web.Response(
        text=serialize.escalation_rows_json(
            rows[:limit], following, items=request.app[ESCALATION_ITEMS]
        ),
        content_type="application/json",
    )


def _list_details(filters: dict[str, object], count: int, paged: bool) -> dict[str, object]:
    """``escalation.list`` details: the items returned and the filters given."""
    details: dict[str, object] = {"count": count}
    statuses = filters.get("statuses")
    if isinstance(statuses, list):
        details["status"] = [str(s) for s in statuses]
    if filters.get("severity") is not None:
        details["severity"] = str(filters["severity"])
    if paged:
        details["after"] = True
    return details


async def get_escalation(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    escalation_id = path_id(request)
    async with request.app[DATABASE].write() as session:
        found = await session.get(Escalation, escalation_id)
        if found is None:
            raise ApiError(404, "not_found", "escalation not found")
        _audit(request, who, session, "escalation.view", escalation_id, found.patient_id)
    return web.json_response(serialize.escalation(found))


def _audit(
    request: web.Request,
    who: Principal,
    session: AsyncSession,
    action: str,
    subject: int,
    patient_id: int | None,
    **details: object,
) -> None:
    """An event on an escalation; its patient in the details (the audit page's filter)."""
    if patient_id is not None:
        details["patient_id"] = patient_id
    audit_log.record(request, session, who, action, "escalation", subject, **details)


async def claim(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    escalation_id = path_id(request)
    try:
        async with request.app[DATABASE].write() as session:
            found = await queue.claim(
                session=session,
                escalation_id=escalation_id,
                user_id=who.user_id,
                now=request.app[CLOCK].now(),
            )
            _audit(request, who, session, "escalation.claim", escalation_id, found.patient_id)
    except queue.QueueError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    return web.json_response(serialize.escalation(found, who.email))


async def release(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    escalation_id = path_id(request)
    try:
        async with request.app[DATABASE].write() as session:
            found = await queue.release(
                session=session,
                escalation_id=escalation_id,
                user_id=who.user_id,
                is_admin=who.is_admin,
            )
            _audit(request, who, session, "escalation.release", escalation_id, found.patient_id)
    except queue.QueueError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    return web.json_response(serialize.escalation(found))


async def assign(request: web.Request) -> web.Response:
    """Hand the escalation to another active clinician (the holder of the claim, or an admin;
    anyone for an open item)."""
    who = await require(request, *STAFF)
    escalation_id = path_id(request)
    body = schemas.parse(schemas.Assign, await json_body(request))
    try:
        async with request.app[DATABASE].write() as session:
            found = await queue.assign(
                session=session,
                escalation_id=escalation_id,
                to_user_id=body.user_id,
                by_user_id=who.user_id,
                is_admin=who.is_admin,
                now=request.app[CLOCK].now(),
            )
            _audit(
                request,
                who,
                session,
                "escalation.assign",
                escalation_id,
                found.patient_id,
                to_user_id=body.user_id,
            )
            email = await session.scalar(select(User.email).where(User.id == body.user_id))
    except queue.QueueError as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.details) from exc
    return web.json_response(serialize.escalation(found, email))


async def resolve(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    escalation_id = path_id(request)
    body = schemas.parse(schemas.Resolve, await json_body(request))
    try:
        async with request.app[DATABASE].write() as session:
            found = await queue.resolve(
                session=session,
                escalation_id=escalation_id,
                user_id=who.user_id,
                is_admin=who.is_admin,
                disposition=body.disposition,
                note=body.note,
                now=request.app[CLOCK].now(),
            )
            _audit(
                request,
                who,
                session,
                "escalation.resolve",
                escalation_id,
                found.patient_id,
                disposition=str(body.disposition),
            )
    except queue.QueueError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    return web.json_response(serialize.escalation(found))


def setup(app: web.Application) -> None:
    app[ESCALATION_ITEMS] = serialize.EscalationItems()
    r = app.router
    r.add_get("/api/v1/escalations", list_escalations)
    r.add_get("/api/v1/escalations/{id}", get_escalation)
    r.add_post("/api/v1/escalations/{id}/claim", claim)
    r.add_post("/api/v1/escalations/{id}/release", release)
    r.add_post("/api/v1/escalations/{id}/resolve", resolve)
    r.add_post("/api/v1/escalations/{id}/assign", assign)
