"""Patients: list and search, detail with timeline and trends, and the actions on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock_time
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from aiohttp import web
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.appkeys import CLOCK, DATABASE
from bot.services import conversation_view, history, holds, scheduling
from bot.services import patients as patient_service
from bot.services.flow_store import FlowUnavailableError
from bot.services.patients import PatientConflictError, PatientFields
from bot.services.protocol_store import ProtocolUnavailableError
from bot.settings import is_e164
from bot.web import audit_log, charts
from bot.web.api.schemas import MAX_YEAR, MIN_YEAR
from bot.web.pages.common import (
    form_with_csrf,
    path_int,
    record,
    render,
    require_user,
)
from db.enums import EnrollmentStatus, PatientStatus, VersionStatus
from db.models import Enrollment, FlowVersion, Patient, ProtocolVersion


def _back(patient_id: int, message: str = "", error: str = "") -> web.HTTPSeeOther:
    query = f"?notice={quote(message)}" if message else (f"?error={quote(error)}" if error else "")
    return web.HTTPSeeOther(f"/patients/{patient_id}{query}")


async def list_page(request: web.Request) -> web.Response:
    """The list, or a search (name, phone or reference); audited ``patient.list`` or
    ``patient.search`` with the count and the query (digits masked)."""
    user = require_user(request)
    q = request.query.get("q", "")
    async with request.app[DATABASE].read() as session:
        patients = await history.search_patients(session=session, q=q)
    searched = q.strip()[:80]  # what search_patients matched on
    await audit_log.write(
        request,
        user,
        audit_log.list_action("patient", searched),
        "patient",
        "",
        audit_log.search_details(searched, len(patients)),
    )
    return render(request, "patients.html", {"patients": patients, "q": q})


_PUBLISHED_FLOWS = select(FlowVersion.key).where(FlowVersion.status == VersionStatus.PUBLISHED)
_PUBLISHED_PROTOCOLS = select(ProtocolVersion.key).where(
    ProtocolVersion.status == VersionStatus.PUBLISHED
)


async def _choices(conn: AsyncConnection) -> tuple[list[str], list[str]]:
    """The pickers' published flow and protocol keys, read with the page: a publish or retire
    (from any process) shows at the next view, and nothing needs invalidating."""
    flows = sorted(set((await conn.scalars(_PUBLISHED_FLOWS)).all()))
    protocols = sorted(set((await conn.scalars(_PUBLISHED_PROTOCOLS)).all()))
    return flows, protocols


_PATIENT = (
    select(
        *Patient.__table__.c,
        Enrollment.protocol_key.label("enrolled_key"),
        Enrollment.protocol_version.label("enrolled_version"),
    )
    .outerjoin(
        Enrollment,
        (Enrollment.patient_id == Patient.id) & (Enrollment.status == EnrollmentStatus.ACTIVE),
    )
    .where(Patient.id == bindparam("patient_id"))
    .order_by(Enrollment.id)
)


@dataclass(frozen=True, slots=True)
class ActiveEnrollment:
    protocol_key: str
    protocol_version: int


def _before(request: web.Request) -> conversation_view.Cursor | None:
    """The ``before`` cursor of an "Older check-ins" link (400 if it is not one)."""
    token = request.query.get("before", "")
    if not token:
        return None
    try:
        return conversation_view.Cursor.parse(token)
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=f"The link to older check-ins is malformed ({exc}); open the patient page again."
        ) from exc


async def detail_page(request: web.Request) -> web.Response:
    """The patient with its active enrolments, the conversations (a page of check-ins),
    the trends, the pickers and the view's audit row, in one read."""
    user = require_user(request)
    patient_id = path_int(request)
    db = request.app[DATABASE]
    params = {"patient_id": patient_id}
    before = _before(request)
    async with db.read() as session:
        conn = await session.connection()
        rows = (await conn.execute(_PATIENT, params)).all()
        if not rows:
            raise web.HTTPNotFound(text="No such patient.")
        page = await conversation_view.conversation_page(
            session=session, patient_id=patient_id, before=before
        )
        trends = await history.trends(session=conn, patient_id=patient_id)
        flows, protocols = await _choices(conn)
        hold = await holds.hold_of(conn, patient_id)
    await audit_log.write(request, user, "patient.view", "patient", patient_id)
    enrollments = [
        ActiveEnrollment(r.enrolled_key, r.enrolled_version)
        for r in rows
        if r.enrolled_key is not None
    ]
    return render(
        request,
        "patient.html",
        {
            "p": rows[0],
            "blocks": page.blocks,
            "truncated": page.truncated,
            "older": page.older.token() if page.older is not None else None,
            "paged": before is not None,
            "charts": {name: charts.trend_svg(name, pts) for name, pts in trends.items()},
            "enrollments": enrollments,
            "hold": hold,
            "flows": flows,
            "protocols": protocols,
            "statuses": list(PatientStatus),
            "notice": request.query.get("notice", ""),
            "error": request.query.get("error", ""),
        },
    )


def _parse_local(value: str, patient: Patient) -> datetime:
    """A ``datetime-local`` form value in the patient's zone → aware UTC."""
    naive = datetime.fromisoformat(value)
    if not MIN_YEAR <= naive.year <= MAX_YEAR:
        # the same range as the API: later arithmetic (due times) must not overflow
        raise ValueError(f"The date must be between the years {MIN_YEAR} and {MAX_YEAR}.")
    if naive.tzinfo is not None:
        return naive
    return naive.replace(tzinfo=ZoneInfo(patient.timezone))


async def _patient_action(request: web.Request, kind: str) -> web.Response:
    user = require_user(request, admin=kind in {"enroll", "status"})
    form = await form_with_csrf(request, user)
    patient_id = path_int(request)
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].write() as session:
        patient = await session.scalar(
            select(Patient).where(Patient.id == patient_id).with_for_update()
        )
        if patient is None:
            raise web.HTTPNotFound(text="No such patient.")
        try:
            if kind == "treatment":
                at = (
                    _parse_local(form.get("administered_at", ""), patient)
                    if form.get("administered_at")
                    else now
                )
                name = form.get("kind", "").strip()[:64] or "treatment"
                _t, created = await scheduling.record_treatment(
                    session=session,
                    patient=patient,
                    kind=name,
                    administered_at=at,
                    now=now,
                    recorded_by=user.user_id,
                )
                message = f"Treatment recorded; {len(created)} check-ins scheduled."
            elif kind == "checkin":
                if patient.status is not PatientStatus.ACTIVE or patient.opted_out_at is not None:
                    raise _back(patient_id, error="The patient is not active or has opted out.")
                await scheduling.adhoc_checkin(
                    session=session,
                    patient=patient,
                    flow_key=form.get("flow", ""),
                    due_at=now,
                    now=now,
                )
                message = "Check-in scheduled now (quiet hours still apply)."
            elif kind == "enroll":
                if patient.status is not PatientStatus.ACTIVE or patient.opted_out_at is not None:
                    raise _back(patient_id, error="The patient is not active or has opted out.")
                _e, created = await scheduling.enroll(
                    session=session,
                    patient=patient,
                    protocol_key=form.get("protocol", ""),
                    start_at=now,
                    now=now,
                )
                message = f"Enrolled; {len(created)} check-ins scheduled."
            else:
                status = PatientStatus(form.get("status", ""))
                await patient_service.set_status(
                    session=session, patient=patient, status=status, now=now
                )
                message = f"Patient is now {status}."
        except (ValueError, FlowUnavailableError, ProtocolUnavailableError) as exc:
            raise _back(patient_id, error=str(exc) or "That value is not valid.") from exc
        record(request, session, user, f"patient.{kind}", "patient", patient_id)
    raise _back(patient_id, message)


async def add_treatment(request: web.Request) -> web.Response:
    return await _patient_action(request, "treatment")


async def send_checkin(request: web.Request) -> web.Response:
    return await _patient_action(request, "checkin")


async def enroll(request: web.Request) -> web.Response:
    return await _patient_action(request, "enroll")


async def change_status(request: web.Request) -> web.Response:
    return await _patient_action(request, "status")


def _fields(form: dict[str, str]) -> tuple[PatientFields | None, dict[str, str]]:
    errors: dict[str, str] = {}
    first_name = form.get("first_name", "").strip()
    if not first_name or len(first_name) > 80:
        errors["first_name"] = "Enter a first name (up to 80 characters)."
    phone = form.get("phone", "").strip().replace(" ", "")
    if not is_e164(phone):
        errors["phone"] = "Enter a valid phone number in E.164 form, like +15551234567."
    tz = form.get("timezone", "").strip()
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = "Choose an IANA time zone, like America/New_York."
    language = form.get("language", "en").strip() or "en"
    if language not in ("en", "es"):
        errors["language"] = "Choose English or Spanish."
    quiet_start = quiet_end = None
    if form.get("quiet_enabled") == "on":
        try:
            quiet_start = clock_time.fromisoformat(form.get("quiet_start", "21:00"))
            quiet_end = clock_time.fromisoformat(form.get("quiet_end", "08:00"))
        except ValueError:
            errors["quiet"] = "Quiet hours need two times like 21:00 and 08:00."
    if errors:
        return None, errors
    return (
        PatientFields(
            first_name=first_name,
            phone=phone,
            timezone=tz,
            language=language,
            external_ref=form.get("external_ref", "").strip() or None,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
        ),
        {},
    )


def _zones() -> list[str]:
    return sorted(
        z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))
    )


async def new_page(request: web.Request) -> web.Response:
    require_user(request, admin=True)
    return render(
        request,
        "patient_form.html",
        {
            "form": {
                "quiet_enabled": "on",
                "quiet_start": "21:00",
                "quiet_end": "08:00",
                "timezone": "America/New_York",
                "language": "en",
            },
            "errors": {},
            "zones": _zones(),
            "editing": None,
        },
    )


async def create(request: web.Request) -> web.Response:
    user = require_user(request, admin=True)
    form = await form_with_csrf(request, user)
    fields, errors = _fields(form)
    if fields is not None:
        try:
            async with request.app[DATABASE].write() as session:
                patient = await patient_service.create_patient(
                    session=session, fields=fields, now=request.app[CLOCK].now()
                )
                record(request, session, user, "patient.create", "patient", patient.id)
            raise _back(patient.id, "Patient created.")
        except PatientConflictError as exc:
            errors["phone"] = str(exc).capitalize() + "."
    return render(
        request,
        "patient_form.html",
        {"form": form, "errors": errors, "zones": _zones(), "editing": None},
        status=422,
    )


async def edit_page(request: web.Request) -> web.Response:
    """The edit form shows the patient's name and phone: audited ``patient.view``."""
    user = require_user(request, admin=True)
    patient_id = path_int(request)
    async with request.app[DATABASE].read() as session:
        p = await session.get(Patient, patient_id)
    if p is None:
        raise web.HTTPNotFound(text="No such patient.")
    await audit_log.write(request, user, "patient.view", "patient", patient_id, {"page": "edit"})
    form = {
        "first_name": p.first_name,
        "phone": p.phone,
        "timezone": p.timezone,
        "language": p.language,
        "external_ref": p.external_ref or "",
        "quiet_enabled": "on" if p.quiet_start is not None else "",
        "quiet_start": p.quiet_start.strftime("%H:%M") if p.quiet_start else "21:00",
        "quiet_end": p.quiet_end.strftime("%H:%M") if p.quiet_end else "08:00",
    }
    return render(
        request, "patient_form.html", {"form": form, "errors": {}, "zones": _zones(), "editing": p}
    )


async def update(request: web.Request) -> web.Response:
    user = require_user(request, admin=True)
    form = await form_with_csrf(request, user)
    patient_id = path_int(request)
    fields, errors = _fields(form)
    async with request.app[DATABASE].write() as session:
        p = await session.scalar(select(Patient).where(Patient.id == patient_id).with_for_update())
        if p is None:
            raise web.HTTPNotFound(text="No such patient.")
        if fields is not None:
            clash = await session.scalar(
                select(Patient.id).where(Patient.phone == fields.phone, Patient.id != patient_id)
            )
            if clash is not None:
                errors["phone"] = "Another patient has this phone number."
            else:
                p.first_name, p.phone, p.timezone, p.language = (
                    fields.first_name,
                    fields.phone,
                    fields.timezone,
                    fields.language,
                )
                p.external_ref = fields.external_ref
                p.quiet_start, p.quiet_end = fields.quiet_start, fields.quiet_end
                p.updated_at = request.app[CLOCK].now()
                record(request, session, user, "patient.update", "patient", patient_id)
    if not errors and fields is not None:
        raise _back(patient_id, "Saved.")  # after the commit
    return render(
        request,
        "patient_form.html",
        {"form": form, "errors": errors, "zones": _zones(), "editing": p},
        status=422,
    )


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/patients", list_page)
    r.add_get("/patients/new", new_page)
    r.add_post("/patients", create)
    r.add_get("/patients/{id}", detail_page)
    r.add_get("/patients/{id}/edit", edit_page)
    r.add_post("/patients/{id}/edit", update)
    r.add_post("/patients/{id}/treatments", add_treatment)
    r.add_post("/patients/{id}/checkins", send_checkin)
    r.add_post("/patients/{id}/enrollments", enroll)
    r.add_post("/patients/{id}/status", change_status)
