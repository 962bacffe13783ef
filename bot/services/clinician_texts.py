"""A clinician's own text to a patient: through the outbox, in the transcript and the audit trail.

Quiet hours are the patient's protection from automated messages; a clinician who
decides to text at night may (the page asks them to confirm). An opt-out is the law:
a patient who sent STOP gets nothing until they send START.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import outbox
from bot.services.scheduling import quiet_now
from db import audit
from db.enums import PatientStatus
from db.models import Message, Patient

MAX_BODY = 1600
PURPOSE = "clinician"


class TextRefused(ValueError):
    """Why the text cannot go: ``field`` names the input at fault, if one is."""

    def __init__(self, message: str, *, field: str = "", status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass(frozen=True, slots=True)
class Sent:
    message: Message
    at_night: bool  # sent inside the patient's quiet hours


def check_body(body: str) -> str:
    text = body.strip()
    if not text:
        raise TextRefused("write the text to send", field="body")
    if len(text) > MAX_BODY:
        raise TextRefused(f"at most {MAX_BODY} characters", field="body")
    if "\x00" in text:
        raise TextRefused("the text contains a NUL character", field="body")
    return text


def refusal(patient: Patient) -> str | None:
    """Why nothing may be texted to this patient now, or None."""
    if patient.opted_out_at is not None:
        return "the patient opted out of texts (STOP); phone them instead"
    if patient.status is PatientStatus.DISCHARGED:
        return "the patient is discharged"
    return None


async def send_to_patient(
    *,
    session: AsyncSession,
    patient: Patient,
    body: str,
    user_id: int,
    now: datetime,
    address: str = "",
    escalation_id: int | None = None,
) -> Sent:
    """Queue the text (the outbox sends it after commit) and audit it."""
    text = check_body(body)
    why = refusal(patient)
    if why is not None:
        raise TextRefused(why, status=409)
    message = outbox.enqueue(
        session=session,
        phone=patient.phone,
        body=text,
        purpose=PURPOSE,
        now=now,
        patient_id=patient.id,
        user_id=user_id,
    )
    await session.flush()
    night = quiet_now(patient, now)
    audit.record(
        session=session,
        action="patient.text",
        at=now,
        actor_id=user_id,
        subject_type="patient",
        subject_id=patient.id,
        source_address=address,
        details={
            "message_id": message.id,
            "chars": len(text),
            "quiet_hours": night,
            **({"escalation_id": escalation_id} if escalation_id is not None else {}),
        },
    )
    return Sent(message, night)
