"""Creating and changing patients: shared by the API and the pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import scheduling
from bot.services.optout import StopCause, stop_texting
from db.enums import PatientStatus
from db.models import Patient

_UNSET = object()


class PatientConflictError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PatientFields:
    first_name: str
    phone: str
    timezone: str
    language: str = "en"
    external_ref: str | None = None
    quiet_start: time | None = time(21, 0)
    quiet_end: time | None = time(8, 0)


async def create_patient(*, session: AsyncSession, fields: PatientFields, now: datetime) -> Patient:
    taken = await session.scalar(
        select(func.count()).select_from(Patient).where(Patient.phone == fields.phone)
    )
    if taken:
        raise PatientConflictError("another patient has this phone number")
    if fields.external_ref:
        taken = await session.scalar(
            select(func.count())
            .select_from(Patient)
            .where(Patient.external_ref == fields.external_ref)
        )
        if taken:
            raise PatientConflictError("another patient has this external reference")
    patient = Patient(
        first_name=fields.first_name,
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
