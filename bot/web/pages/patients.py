"""Patients: list and search, detail with timeline and trends, and the actions on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from aiohttp import web
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import clinician_texts, conversation_view, history, holds, scheduling
from bot.services import patients as patient_service
from bot.services.flow_store import FlowUnavailableError
from bot.services.patients import PatientConflictError, PatientFields
from bot.services.protocol_store import ProtocolUnavailableError
from bot.services.scheduling import quiet_now
from bot.settings import parse_phone
from bot.web import audit_log, charts
from bot.web.api.schemas import MAX_YEAR, MIN_YEAR
from bot.web.outbound import send_now
from bot.web.pages import notices
from bot.web.pages.common import (
    form_with_csrf,
    path_int,
    record,
    render,
    require_user,
)
from db.enums import EnrollmentStatus, PatientStatus, VersionStatus
from db.models import Enrollment, FlowVersion, Patient, ProtocolVersion, Treatment


def _back(patient_id: int, notice: str = "", error: str = "") -> web.HTTPSeeOther:
    """Back to the patient's page showing a known notice or error code."""
    return notices.to(f"/patients/{patient_id}", notice=notice, error=error)


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


_PUBLISHED_FLOWS = select(FlowVersion.key, FlowVersion.title).where(
    FlowVersion.status == VersionStatus.PUBLISHED
)
_PUBLISHED_PROTOCOLS = select(ProtocolVersion.key, ProtocolVersion.title).where(
    ProtocolVersion.status == VersionStatus.PUBLISHED
)


async def _choices(
    conn: AsyncConnection,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The pickers' published flows and protocols as (key, title), by title, read with the
    page: a publish or retire (from any process) shows at the next view."""

    def titled(rows: Sequence[Any]) -> list[tuple[str, str]]:
        return sorted({r.key: r.title or r.key for r in rows}.items(), key=lambda kt: kt[1])

    flows = titled((await conn.execute(_PUBLISHED_FLOWS)).all())
    protocols = titled((await conn.execute(_PUBLISHED_PROTOCOLS)).all())
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


async def detail_page(
    request: web.Request,
    *,
    error: str = "",
    draft: str = "",
    status: int = 200,
    confirm_night: bool = False,
) -> web.Response:
    """The patient with its active enrolments, the conversations (a page of check-ins),
    the trends, the pickers and the view's audit row, in one read. ``error`` re-shows the
    page after a refused form (422); ``draft`` and ``confirm_night`` the text form."""
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
        treatments = (
            await session.scalars(
                select(Treatment)
                .where(Treatment.patient_id == patient_id)
                .order_by(Treatment.administered_at.desc())
                .limit(50)
            )
        ).all()
    await audit_log.write(request, user, "patient.view", "patient", patient_id)
    now = request.app[CLOCK].now()
    zone = ZoneInfo(rows[0].timezone)
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
            "charts": {
                name: charts.trend_svg(name, pts, markers=[t.administered_at for t in treatments])
                for name, pts in trends.items()
            },
            "enrollments": enrollments,
            "hold": hold,
            "flows": flows,
            "protocols": protocols,
            "statuses": list(PatientStatus),
            "treatments": [(t, t.administered_at.astimezone(zone)) for t in treatments],
            "local_now": now.astimezone(zone),
            "quiet": quiet_now(rows[0], now),
            "can_text": rows[0].opted_out_at is None
            and rows[0].status is not PatientStatus.DISCHARGED,
            "draft": draft,
            "confirm_night": confirm_night,
            **({"error": error} if error else {}),
        },
        status=status,
    )


class FormRefused(ValueError):
    """A form value the page cannot accept; its text is shown on the re-rendered page."""


def _parse_local(value: str, patient: Patient, now: datetime) -> datetime:
    """A ``datetime-local`` form value in the patient's zone → aware UTC; required and not
    in the future (a treatment dated next year would plan check-ins for next year)."""
    if not value:
        raise FormRefused("Enter when the treatment was given.")
    try:
        naive = datetime.fromisoformat(value)
    except ValueError:
        raise FormRefused("Enter the date and time like 2026-03-09 14:30.") from None
    if not MIN_YEAR <= naive.year <= MAX_YEAR:
        # the same range as the API: later arithmetic (due times) must not overflow
        raise FormRefused(f"The date must be between the years {MIN_YEAR} and {MAX_YEAR}.")
    at = naive if naive.tzinfo is not None else naive.replace(tzinfo=ZoneInfo(patient.timezone))
    if at > now + scheduling.FUTURE_TOLERANCE:
        raise FormRefused("A treatment cannot be in the future: enter when it was given.")
    return at


_DONE = {
    "treatment": "treatment_recorded",
    "checkin": "checkin_scheduled",
    "enroll": "enrolled",
    "status": "status_changed",
}


async def _patient_action(request: web.Request, kind: str) -> web.Response:
    user = require_user(request, admin=kind in {"enroll", "status"})
    form = await form_with_csrf(request, user)
    patient_id = path_int(request)
    now = request.app[CLOCK].now()
    try:
        async with request.app[DATABASE].write() as session:
            patient = await session.scalar(
                select(Patient).where(Patient.id == patient_id).with_for_update()
            )
            if patient is None:
                raise web.HTTPNotFound(text="No such patient.")
            if kind in {"checkin", "enroll"} and (
                patient.status is not PatientStatus.ACTIVE or patient.opted_out_at is not None
            ):
                raise _back(patient_id, error="inactive")
            details: dict[str, object] = {}
            if kind == "treatment":
                at = _parse_local(form.get("administered_at", ""), patient, now)
                name = form.get("kind", "").strip()[:64] or "treatment"
                treatment, _created = await scheduling.record_treatment(
                    session=session,
                    patient=patient,
                    kind=name,
                    administered_at=at,
                    now=now,
                    recorded_by=user.user_id,
                )
                details["treatment_id"] = treatment.id
            elif kind == "checkin":
                if not form.get("flow"):
                    raise FormRefused("Choose which check-in to send.")
                await scheduling.adhoc_checkin(
                    session=session,
                    patient=patient,
                    flow_key=form.get("flow", ""),
                    due_at=now,
                    now=now,
                )
                details["flow"] = form.get("flow", "")
            elif kind == "enroll":
                await scheduling.enroll(
                    session=session,
                    patient=patient,
                    protocol_key=form.get("protocol", ""),
                    start_at=now,
                    now=now,
                )
            else:
                status = PatientStatus(form.get("status", ""))
                await patient_service.set_status(
                    session=session, patient=patient, status=status, now=now
                )
            record(request, session, user, f"patient.{kind}", "patient", patient_id, **details)
    except (ValueError, FlowUnavailableError, ProtocolUnavailableError) as exc:
        return await detail_page(request, error=str(exc) or "That value is not valid.", status=422)
    raise _back(patient_id, _DONE[kind])


async def add_treatment(request: web.Request) -> web.Response:
    return await _patient_action(request, "treatment")


async def send_checkin(request: web.Request) -> web.Response:
    return await _patient_action(request, "checkin")


async def enroll(request: web.Request) -> web.Response:
    return await _patient_action(request, "enroll")


async def change_status(request: web.Request) -> web.Response:
    return await _patient_action(request, "status")


async def _treatment_change(request: web.Request, *, remove: bool) -> web.Response:
    """Correct a treatment's time or kind, or delete it; audited with the old values."""
    user = require_user(request)
    form = await form_with_csrf(request, user)
    patient_id = path_int(request)
    treatment_id = path_int(request, "treatment_id")
    now = request.app[CLOCK].now()
    try:
        async with request.app[DATABASE].write() as session:
            patient = await session.scalar(
                select(Patient).where(Patient.id == patient_id).with_for_update()
            )
            treatment = await session.get(Treatment, treatment_id)
            if patient is None or treatment is None or treatment.patient_id != patient_id:
                raise web.HTTPNotFound(text="No such treatment.")
            was = {"kind": treatment.kind, "administered_at": treatment.administered_at.isoformat()}
            await scheduling.correct_treatment(
                session=session,
                patient=patient,
                treatment=treatment,
                now=now,
                kind=None if remove else (form.get("kind", "").strip()[:64] or treatment.kind),
                administered_at=None
                if remove
                else _parse_local(form.get("administered_at", ""), patient, now),
                remove=remove,
            )
            record(
                request,
                session,
                user,
                "patient.treatment_delete" if remove else "patient.treatment_change",
                "patient",
                patient_id,
                treatment_id=treatment_id,
                was=was,
            )
    except FormRefused as exc:
        return await detail_page(request, error=str(exc), status=422)
    raise _back(patient_id, "treatment_deleted" if remove else "treatment_changed")


async def change_treatment(request: web.Request) -> web.Response:
    return await _treatment_change(request, remove=False)


async def delete_treatment(request: web.Request) -> web.Response:
    return await _treatment_change(request, remove=True)


async def text_patient(request: web.Request) -> web.Response:
    """A clinician's own text to the patient; inside the patient's quiet hours it asks first."""
    user = require_user(request)
    form = await form_with_csrf(request, user)
    patient_id = path_int(request)
    now = request.app[CLOCK].now()
    body = form.get("body", "")
    try:
        async with request.app[DATABASE].write() as session:
            patient = await session.get(Patient, patient_id)
            if patient is None:
                raise web.HTTPNotFound(text="No such patient.")
            if quiet_now(patient, now) and form.get("confirm_night") != "yes":
                raise _NeedsConfirmation
            sent = await clinician_texts.send_to_patient(
                session=session,
                patient=patient,
                body=body,
                user_id=user.user_id,
                now=now,
                address=audit_log.source(request),
            )
    except _NeedsConfirmation:
        return await detail_page(request, draft=body, confirm_night=True)
    except clinician_texts.TextRefused as exc:
        return await detail_page(request, error=str(exc), draft=body, status=exc.status)
    send_now(request.app, [sent.message.id])
    raise _back(patient_id, "text_queued")


class _NeedsConfirmation(Exception):
    """Night for the patient: the page asks the clinician to confirm first."""


def _fields(form: dict[str, str], region: str) -> tuple[PatientFields | None, dict[str, str]]:
    """The form's values, or an error per field; the phone may be typed in national form
    (read in ``DEFAULT_REGION``) and is kept in E.164."""
    errors: dict[str, str] = {}
    first_name = form.get("first_name", "").strip()
    if not first_name or len(first_name) > 80:
        errors["first_name"] = "Enter a first name (up to 80 characters)."
    last_name = form.get("last_name", "").strip()
    if len(last_name) > 80:
        errors["last_name"] = "A last name is at most 80 characters."
    phone = parse_phone(form.get("phone", ""), region)
    if phone is None:
        errors["phone"] = (
            f"Enter a valid mobile number, like (202) 555-0143 or +12025550143 "
            f"(numbers without a country code are read as {region})."
        )
    born: date | None = None
    if form.get("date_of_birth", "").strip():
        try:
            born = date.fromisoformat(form["date_of_birth"].strip())
        except ValueError:
            errors["date_of_birth"] = "Enter the date of birth like 1984-07-21."
        else:
            if not date(1900, 1, 1) <= born <= date.today():
                errors["date_of_birth"] = "The date of birth must be in the past, after 1900."
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
    record_number = form.get("external_ref", "").strip()
    if len(record_number) > 120:
        errors["external_ref"] = "A record number is at most 120 characters."
    if errors or phone is None:
        return None, errors
    return (
        PatientFields(
            first_name=first_name,
            last_name=last_name,
            date_of_birth=born,
            phone=phone,
            timezone=tz,
            language=language,
            external_ref=record_number or None,
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
    fields, errors = _fields(form, request.app[SETTINGS].default_region)
    if fields is not None:
        try:
            async with request.app[DATABASE].write() as session:
                patient = await patient_service.create_patient(
                    session=session, fields=fields, now=request.app[CLOCK].now()
                )
                record(request, session, user, "patient.create", "patient", patient.id)
            raise _back(patient.id, "patient_saved")
        except PatientConflictError as exc:
            errors[exc.field] = str(exc).capitalize() + "."
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
        "last_name": p.last_name,
        "date_of_birth": p.date_of_birth.isoformat() if p.date_of_birth else "",
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
    fields, errors = _fields(form, request.app[SETTINGS].default_region)
    async with request.app[DATABASE].read() as session:
        p = await session.get(Patient, patient_id)
    if p is None:
        raise web.HTTPNotFound(text="No such patient.")
    if fields is not None:
        try:
            async with request.app[DATABASE].write() as session:
                locked = await session.scalar(
                    select(Patient).where(Patient.id == patient_id).with_for_update()
                )
                if locked is None:
                    raise web.HTTPNotFound(text="No such patient.")
                await patient_service.update_patient(
                    session=session, patient=locked, fields=fields, now=request.app[CLOCK].now()
                )
                record(request, session, user, "patient.update", "patient", patient_id)
            raise _back(patient_id, "patient_saved")  # after the commit
        except PatientConflictError as exc:
            errors[exc.field] = str(exc).capitalize() + "."
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
    r.add_post("/patients/{id}/treatments/{treatment_id}", change_treatment)
    r.add_post("/patients/{id}/treatments/{treatment_id}/delete", delete_treatment)
    r.add_post("/patients/{id}/messages", text_patient)
    r.add_post("/patients/{id}/checkins", send_checkin)
    r.add_post("/patients/{id}/enrollments", enroll)
    r.add_post("/patients/{id}/status", change_status)
