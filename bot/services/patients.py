"""Creating and changing patients: shared by the API and the pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import scheduling
from bot.services.optout import StopCause, stop_texting
from db.enums import PatientStatus
from db.models import Patient

_UNSET = object()


class PatientConflictError(ValueError):
    """A value another patient already has; ``field`` names it."""

    def __init__(self, message: str, *, field: str = "phone") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class PatientFields:
    first_name: str
    phone: str
    timezone: str
    language: str = "en"
    external_ref: str | None = None
    quiet_start: time | None = time(21, 0)
    quiet_end: time | None = time(8, 0)
    last_name: str = ""
    date_of_birth: date | None = None


async def _check_unique(
    session: AsyncSession, fields: PatientFields, patient_id: int | None = None
) -> None:
    """A phone or record number another patient has is a conflict (never a database error)."""
    others = select(func.count()).select_from(Patient)
    if patient_id is not None:
        others = others.where(Patient.id != patient_id)
    if await session.scalar(others.where(Patient.phone == fields.phone)):
        raise PatientConflictError("another patient has this phone number", field="phone")
    if fields.external_ref and await session.scalar(
        others.where(Patient.external_ref == fields.external_ref)
    ):
        raise PatientConflictError("another patient has this record number", field="external_ref")


async def create_patient(*, session: AsyncSession, fields: PatientFields, now: datetime) -> Patient:
    await _check_unique(session, fields)
    patient = Patient(
        first_name=fields.first_name,
        last_name=fields.last_name,
        date_of_birth=fields.date_of_birth,
        phone=fields.phone,
        timezone=fields.timezone,
        language=fields.language,
        external_ref=fields.external_ref,
        quiet_start=fields.quiet_start,
        quiet_end=fields.quiet_end,
        status=PatientStatus.ACTIVE,
        created_at=now,
        updated_at=now,
    )
    session.add(patient)
    await session.flush()
    return patient


async def update_patient(
    *, session: AsyncSession, patient: Patient, fields: PatientFields, now: datetime
) -> None:
    """Change a patient's details (the number's owner is checked like a new patient's)."""
    await _check_unique(session, fields, patient.id)
    patient.first_name, patient.last_name = fields.first_name, fields.last_name
    patient.date_of_birth = fields.date_of_birth
    patient.phone, patient.timezone, patient.language = (
        fields.phone,
        fields.timezone,
        fields.language,
    )
    patient.external_ref = fields.external_ref
    patient.quiet_start, patient.quiet_end = fields.quiet_start, fields.quiet_end
    patient.updated_at = now


async def set_status(
    *, session: AsyncSession, patient: Patient, status: PatientStatus, now: datetime
) -> bool:
    """Pause, resume or discharge; pending check-ins stop, reactivation brings them back."""
    if status is patient.status:
        return False
    previous = patient.status
    patient.status = status
    patient.updated_at = now
    await session.flush()
    if status is PatientStatus.ACTIVE:
        await scheduling.rematerialise(session=session, patient=patient, now=now)
    elif previous is PatientStatus.ACTIVE or status is PatientStatus.DISCHARGED:
        await stop_texting(session=session, patient=patient, cause=StopCause(str(status)), now=now)
    return True
