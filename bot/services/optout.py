"""Stopping texts to a patient: the one function for STOP, a carrier opt-out, a pause and a
discharge, so that each cancels the same things and tells clinicians the same way."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.escalations import open_escalation_exists, raise_escalation
from db.enums import CheckinStatus, Direction, MessageStatus, Severity
from db.models import Checkin, Message, Patient
from flows.reasons import Reason

log = logging.getLogger(__name__)

# Purposes that still go to a patient who opted out (safety overrides STOP).
ALWAYS_SEND = frozenset({"crisis"})


class StopCause(StrEnum):
    """Why texts stop; the value is the cancelled check-ins' outcome."""

    STOP = "opted_out"  # the patient texted STOP (or a synonym)
    CARRIER = "carrier_opt_out"  # Twilio error 21610: the carrier blocks our texts
    PAUSED = "paused"
    DISCHARGED = "discharged"


_SUMMARY = {
    StopCause.STOP: "The patient replied STOP: no more texts will be sent until they reply "
    "START. SMS cannot reach them now; phone them if they need follow-up.",
    StopCause.CARRIER: "The carrier reports the patient has blocked texts from this number "
    "(error 21610). SMS cannot reach them now; phone them if they need follow-up.",
}


async def stop_texting(
    *,
    session: AsyncSession,
    patient: Patient,
    cause: StopCause,
    now: datetime,
    message_id: int | None = None,
) -> int:
    """Cancel the patient's scheduled and running check-ins and unsent texts (crisis
    resources still go out); an opt-out by the patient or carrier also marks them opted out
    and raises one open item for clinicians. Returns the check-ins cancelled."""
    if cause in (StopCause.STOP, StopCause.CARRIER) and patient.opted_out_at is None:
        patient.opted_out_at = now
        patient.updated_at = now
    active = await session.scalar(
        Checkin.__table__.select()
        .with_only_columns(Checkin.id)
        .where(Checkin.patient_id == patient.id, Checkin.status == CheckinStatus.ACTIVE)
        .limit(1)
    )
    cancelled = await session.execute(
        update(Checkin)
        .where(
            Checkin.patient_id == patient.id,
            Checkin.status.in_((CheckinStatus.SCHEDULED, CheckinStatus.ACTIVE)),
        )
        .values(
            status=CheckinStatus.CANCELLED,
            outcome=str(cause),
            completed_at=now,
            lease_until=None,
        )
        .execution_options(synchronize_session="fetch")
    )
    await session.execute(
        update(Message)
        .where(
            Message.patient_id == patient.id,
            Message.direction == Direction.OUT,
            Message.status == MessageStatus.PENDING,
            Message.purpose.not_in(ALWAYS_SEND),
        )
        .values(status=MessageStatus.CANCELLED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    summary = _SUMMARY.get(cause)
    if summary is not None and not await open_escalation_exists(
        session=session, patient_id=patient.id, reason=Reason.OPTED_OUT
    ):
        raise_escalation(
            session=session,
            severity=Severity.LOW,
            reason=Reason.OPTED_OUT,
            summary=summary,
            now=now,
            patient_id=patient.id,
            checkin_id=active,
            message_id=message_id,
        )
    log.info("patient %s: texts stopped (%s)", patient.id, cause)
    return int(cancelled.rowcount or 0)  # type: ignore[attr-defined]
