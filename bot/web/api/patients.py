"""Patients and what hangs off them: messages, check-ins, treatments, enrollments."""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK, DATABASE
from bot.services import clinician_texts, history, holds, scheduling
from bot.services import patients as patient_service
from bot.services.flow_store import FlowUnavailableError
from bot.services.patients import PatientConflictError, PatientFields
from bot.services.protocol_store import ProtocolUnavailableError
from bot.web import audit_log
from bot.web.api import schemas, serialize
from bot.web.api.auth import ADMIN, STAFF, Principal, require
from bot.web.api.errors import ApiError, invalid, json_body, not_found
from bot.web.outbound import send_now
from db.enums import PatientStatus
from db.models import Checkin, Message, Patient, Score

MAX_LIST = 200


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    # ids are 32-bit in the database: a larger one names no row (not an error)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > schemas.MAX_ID:
        raise not_found("resource")
    return int(raw)


async def _patient(session: AsyncSession, patient_id: int, *, lock: bool = False) -> Patient:
    query = select(Patient).where(Patient.id == patient_id)
    if lock:
        query = query.with_for_update()
    found = await session.scalar(query)
    if found is None:
        raise not_found("patient")
    return found


def _audit(
    request: web.Request,
    who: Principal,
    session: AsyncSession,
    action: str,
    subject_id: object,
    **details: object,
) -> None:
    audit_log.record(request, session, who, action, "patient", subject_id, **details)


async def list_patients(request: web.Request) -> web.Response:
    """Audited ``patient.list`` or ``patient.search`` (count, status, the query masked)."""
    who = await require(request, *STAFF)
    q = request.query.get("q", "")
    if "\x00" in q:
        raise invalid("q", "must not contain NUL characters")
    q = q.strip()[:80]
    status = request.query.get("status")
    query = select(Patient).order_by(Patient.first_name, Patient.id).limit(MAX_LIST)
    if q:
        query = query.where(history.patient_matches(q))
    if status is not None:
        try:
            query = query.where(Patient.status == PatientStatus(status))
        except ValueError as exc:
            raise invalid("status", "must be active, paused or discharged") from exc
    async with request.app[DATABASE].read() as session:
        rows = (await session.scalars(query)).all()
        held = await holds.holds(session, [p.id for p in rows])
    details = audit_log.search_details(q, len(rows))
    if status:
        details["status"] = status
    await audit_log.write(request, who, audit_log.list_action("patient", q), "patient", "", details)
    return web.json_response({"items": [serialize.patient(p, held.get(p.id)) for p in rows]})


async def create_patient(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    body = schemas.parse(schemas.PatientCreate, await json_body(request))
    now = request.app[CLOCK].now()
    fields = PatientFields(
        first_name=body.first_name,
        last_name=body.last_name,
        date_of_birth=body.date_of_birth,
        phone=body.phone,
        timezone=body.timezone,
        language=body.language,
        external_ref=body.external_ref,
        quiet_start=body.quiet_hours.start if body.quiet_hours else None,
        quiet_end=body.quiet_hours.end if body.quiet_hours else None,
    )
    try:
        async with request.app[DATABASE].write() as session:
            patient = await patient_service.create_patient(session=session, fields=fields, now=now)
            _audit(request, who, session, "patient.create", patient.id)
    except PatientConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except IntegrityError as exc:
        raise ApiError(409, "conflict", "phone or external_ref is already in use") from exc
    return web.json_response(serialize.patient(patient), status=201)


async def get_patient(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    async with request.app[DATABASE].write() as session:
        patient = await _patient(session, patient_id)
        hold = await holds.hold_of(session, patient_id)
        _audit(request, who, session, "patient.view", patient_id)
    return web.json_response(serialize.patient(patient, hold))


async def update_patient(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    patient_id = path_id(request)
    data = await json_body(request)
    body = schemas.parse(schemas.PatientUpdate, data)
    now = request.app[CLOCK].now()
    try:
        async with request.app[DATABASE].write() as session:
            patient = await _patient(session, patient_id, lock=True)
            changed: list[str] = []
            for name in (
                "first_name",
                "last_name",
                "date_of_birth",
                "phone",
                "timezone",
                "language",
                "external_ref",
            ):
                if name in body.model_fields_set and getattr(body, name) is not None:
                    setattr(patient, name, getattr(body, name))
                    changed.append(name)
            if "quiet_hours" in body.model_fields_set:
                patient.quiet_start = body.quiet_hours.start if body.quiet_hours else None
                patient.quiet_end = body.quiet_hours.end if body.quiet_hours else None
                changed.append("quiet_hours")
            if body.status is not None and await patient_service.set_status(
                session=session, patient=patient, status=body.status, now=now
            ):
                changed.append("status")
            patient.updated_at = now
            _audit(request, who, session, "patient.update", patient_id, fields=changed)
            hold = await holds.hold_of(session, patient_id)
    except IntegrityError as exc:
        raise ApiError(409, "conflict", "phone or external_ref is already in use") from exc
    return web.json_response(serialize.patient(patient, hold))


async def list_messages(request: web.Request) -> web.Response:
    """The patient's texts (the transcript): audited ``message.list``."""
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    async with request.app[DATABASE].read() as session:
        await _patient(session, patient_id)
        rows = (
            await session.scalars(
                select(Message)
                .where(Message.patient_id == patient_id)
                .order_by(Message.created_at, Message.id)
            )
        ).all()
    await audit_log.write(request, who, "message.list", "patient", patient_id, {"count": len(rows)})
    return web.json_response({"items": [serialize.message(m) for m in rows]})


async def list_checkins(request: web.Request) -> web.Response:
    """The patient's check-ins with their scores: audited ``checkin.list``."""
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    async with request.app[DATABASE].read() as session:
        await _patient(session, patient_id)
        rows = (
            await session.scalars(
                select(Checkin)
                .where(Checkin.patient_id == patient_id)
                .order_by(Checkin.due_at, Checkin.id)
            )
        ).all()
        scores: dict[int, dict[str, float]] = defaultdict(dict)
        for checkin_id, name, total in (
            await session.execute(
                select(Score.checkin_id, Score.instrument, Score.total).where(
                    Score.patient_id == patient_id
                )
            )
        ).all():
            scores[checkin_id][name] = total
    await audit_log.write(request, who, "checkin.list", "patient", patient_id, {"count": len(rows)})
    return web.json_response({"items": [serialize.checkin(c, scores.get(c.id)) for c in rows]})


async def create_checkin(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    body = schemas.parse(schemas.CheckinCreate, await json_body(request))
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].write() as session:
        patient = await _patient(session, patient_id, lock=True)
        _receivable(patient)
        try:
            checkin = await scheduling.adhoc_checkin(
                session=session,
                patient=patient,
                flow_key=body.flow,
                due_at=body.due_at or now,
                now=now,
            )
        except FlowUnavailableError as exc:
            raise invalid("flow", str(exc)) from exc
        _audit(request, who, session, "checkin.create", patient_id, flow=body.flow)
    return web.json_response(serialize.checkin(checkin), status=201)


def _receivable(patient: Patient) -> None:
    if patient.status is not PatientStatus.ACTIVE:
        raise ApiError(409, "conflict", f"the patient is {patient.status}; reactivate them first")
    if patient.opted_out_at is not None:
        raise ApiError(409, "conflict", "the patient opted out (STOP); they must reply START first")


async def create_treatment(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    body = schemas.parse(schemas.TreatmentCreate, await json_body(request))
    now = request.app[CLOCK].now()
    if body.administered_at > now + scheduling.FUTURE_TOLERANCE:
        raise invalid("administered_at", "a treatment cannot be in the future")
    async with request.app[DATABASE].write() as session:
        patient = await _patient(session, patient_id, lock=True)
        treatment, created = await scheduling.record_treatment(
            session=session,
            patient=patient,
            kind=body.kind,
            administered_at=body.administered_at,
            now=now,
            recorded_by=who.user_id,
        )
        _audit(request, who, session, "treatment.create", patient_id, kind=body.kind)
    out = serialize.treatment(treatment)
    out["checkins"] = [serialize.checkin(c) for c in created]
    return web.json_response(out, status=201)


async def create_enrollment(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    patient_id = path_id(request)
    body = schemas.parse(schemas.EnrollmentCreate, await json_body(request))
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].write() as session:
        patient = await _patient(session, patient_id, lock=True)
        _receivable(patient)
        try:
            enrollment, created = await scheduling.enroll(
                session=session,
                patient=patient,
                protocol_key=body.protocol,
                start_at=body.start_at or now,
                now=now,
            )
        except ProtocolUnavailableError as exc:
            raise invalid("protocol", str(exc)) from exc
        _audit(request, who, session, "enrollment.create", patient_id, protocol=body.protocol)
    return web.json_response(
        {
            "id": enrollment.id,
            "patient_id": patient_id,
            "protocol": enrollment.protocol_key,
            "protocol_version": enrollment.protocol_version,
            "start_at": serialize.iso(enrollment.start_at),
            "status": str(enrollment.status),
            "checkins": [serialize.checkin(c) for c in created],
        },
        status=201,
    )


async def send_text(request: web.Request) -> web.Response:
    """A clinician's own text to the patient, through the outbox; 409 after STOP."""
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    body = schemas.parse(schemas.PatientText, await json_body(request))
    async with request.app[DATABASE].write() as session:
        patient = await _patient(session, patient_id)
        try:
            sent = await clinician_texts.send_to_patient(
                session=session,
                patient=patient,
                body=body.body,
                user_id=who.user_id,
                now=request.app[CLOCK].now(),
                address=audit_log.source(request),
            )
        except clinician_texts.TextRefused as exc:
            if exc.field:
                raise invalid(exc.field, str(exc)) from exc
            raise ApiError(exc.status, "conflict", str(exc)) from exc
    send_now(request.app, [sent.message.id])
    return web.json_response(serialize.message(sent.message), status=201)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/patients", list_patients)
    r.add_post("/api/v1/patients", create_patient)
    r.add_get("/api/v1/patients/{id}", get_patient)
    r.add_patch("/api/v1/patients/{id}", update_patient)
    r.add_get("/api/v1/patients/{id}/messages", list_messages)
    r.add_post("/api/v1/patients/{id}/messages", send_text)
    r.add_get("/api/v1/patients/{id}/checkins", list_checkins)
    r.add_post("/api/v1/patients/{id}/checkins", create_checkin)
    r.add_post("/api/v1/patients/{id}/treatments", create_treatment)
    r.add_post("/api/v1/patients/{id}/enrollments", create_enrollment)
