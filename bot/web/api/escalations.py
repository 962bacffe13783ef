"""The escalation queue over the API."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK, DATABASE
from bot.services import queue
from bot.web import audit_log
from bot.web.api import schemas, serialize
from bot.web.api.auth import STAFF, Principal, require
from bot.web.api.errors import ApiError, invalid, json_body
from bot.web.api.patients import path_id
from db.enums import EscalationStatus, Severity
from db.models import Escalation

ESCALATION_ITEMS = web.AppKey("escalation_items", serialize.EscalationItems)


def _filters(request: web.Request) -> dict[str, object]:
    out: dict[str, object] = {}
    status = request.query.get("status", "").strip()
    if status:
        try:
            out["statuses"] = [EscalationStatus(s) for s in status.split(",")]
        except ValueError as exc:
            raise invalid("status", "must be open, claimed or resolved (comma-separated)") from exc
    severity = request.query.get("severity", "").strip()
    if severity:
        try:
            out["severity"] = Severity(severity)
        except ValueError as exc:
            raise invalid("severity", "must be critical, high, moderate or low") from exc
    patient = request.query.get("patient_id", "").strip()
    if patient:
        if not (patient.isascii() and patient.isdigit()) or len(patient) > 18:
            raise invalid("patient_id", "must be a whole number")
        out["patient_id"] = int(patient)
    return out


def _page(request: web.Request) -> tuple[int, queue.QueueCursor | None]:
    """``limit`` and ``after``: the page's size and where it starts."""
    limit = queue.QUEUE_LIMIT
    text = request.query.get("limit", "").strip()
    if text:
        # at most 3 digits: int() of a huge digit string is itself an error
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
            1 <= int(text) <= queue.QUEUE_MAX_LIMIT
        ):
            raise invalid("limit", f"must be a whole number from 1 to {queue.QUEUE_MAX_LIMIT}")
        limit = int(text)
    after = request.query.get("after", "").strip()
    if not after:
        return limit, None
    try:
        return limit, queue.QueueCursor.parse(after)
    except ValueError as exc:
        raise invalid("after", "must be the next value of a previous page") from exc


async def list_escalations(request: web.Request) -> web.Response:
    """The queue, polled by every open client: the token check and the rows on one autocommit
    Core connection, the JSON written from plain rows."""
    async with request.app[DATABASE].plain_reads() as conn:
        await require(request, *STAFF, conn=conn)
        limit, after = _page(request)
        # one row more than the page: whether a next page exists
        query, params = queue.queue_rows_query(
            **_filters(request),  # type: ignore[arg-type]
            limit=limit + 1,
            after=after,
        )
        rows = (await conn.execute(query, params)).all()
    following = queue.QueueCursor.after_row(rows[limit - 1]).token() if len(rows) > limit else None
    return web.Response(
        text=serialize.escalation_rows_json(
            rows[:limit], following, items=request.app[ESCALATION_ITEMS]
        ),
        content_type="application/json",
    )


async def get_escalation(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    escalation_id = path_id(request)
    async with request.app[DATABASE].write() as session:
        found = await session.get(Escalation, escalation_id)
        if found is None:
            raise ApiError(404, "not_found", "escalation not found")
        _audit(request, who, session, "escalation.view", escalation_id)
    return web.json_response(serialize.escalation(found))


def _audit(
    request: web.Request,
    who: Principal,
    session: AsyncSession,
    action: str,
    subject: int,
    **details: object,
) -> None:
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
            _audit(request, who, session, "escalation.claim", escalation_id)
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
            _audit(request, who, session, "escalation.release", escalation_id)
    except queue.QueueError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    return web.json_response(serialize.escalation(found))


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
