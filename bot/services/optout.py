"""Stopping texts to a patient: the one function for STOP, a carrier opt-out, a pause and a
discharge, so that each cancels the same things and tells clinicians the same way.

An opt-out by the patient or the carrier, or a pause by staff, means SMS can no longer
reach someone the clinic is following, so it becomes an item that says to phone them:
moderate, or high when it comes in the middle of a safety question or within 72 hours of a
high or critical result (the patient most likely to stop answering is the one who was just
asked about suicide).
The item carries the answers given so far in the interrupted check-in.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.escalations import raise_escalation
from bot.services.flow_store import FlowUnavailableError, pinned
from db.enums import (
    SEVERITY_RANK,
    CheckinStatus,
    Direction,
    EscalationStatus,
    MessageStatus,
    Severity,
)
from db.models import Checkin, Escalation, Message, Patient
from flows import engine
from flows.model import AskNode, Flow
from flows.reasons import Reason
from flows.text import pick

log = logging.getLogger(__name__)

# Purposes that still go to a patient who opted out (safety overrides STOP).
ALWAYS_SEND = frozenset({"crisis"})


class StopCause(StrEnum):
    """Why texts stop; the value is the cancelled check-ins' outcome."""

    STOP = "opted_out"  # the patient texted STOP (or a synonym)
    CARRIER = "carrier_opt_out"  # Twilio error 21610: the carrier blocks our texts
    PAUSED = "paused"
    DISCHARGED = "discharged"


_WHY = {
    StopCause.STOP: "The patient replied STOP: no more texts will be sent until they reply START.",
    StopCause.CARRIER: "The carrier reports the patient has blocked texts from this number "
    "(error 21610).",
    # staff chose it, but answers to a safety question may be left hanging
    StopCause.PAUSED: "Texts to the patient were paused by staff.",
}
_PHONE = " SMS can no longer reach them: phone them."
# An opt-out this soon after a high or critical result is itself a warning sign.
RECENT_RISK = timedelta(hours=72)


async def stop_texting(
    *,
    session: AsyncSession,
    patient: Patient,
    cause: StopCause,
    now: datetime,
    message_id: int | None = None,
) -> int:
    """Cancel the patient's scheduled and running check-ins and unsent texts (crisis
    resources still go out); an opt-out by the patient or carrier also marks them opted out.
    An opt-out or a pause raises an item for clinicians (see the module docstring); a
    discharge, which ends care, does not. Returns the check-ins cancelled."""
    if cause in (StopCause.STOP, StopCause.CARRIER) and patient.opted_out_at is None:
        patient.opted_out_at = now
        patient.updated_at = now
    running = await session.scalar(
        select(Checkin)
        .where(Checkin.patient_id == patient.id, Checkin.status == CheckinStatus.ACTIVE)
        .limit(1)
    )
    flow = await _flow_of(session, running)
    if running is not None and running.state is not None:
        # closed, not left looking like a conversation in progress
        running.state = {**running.state, "status": engine.Status.CANCELLED.value}
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
            revision=Checkin.revision + 1,
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
    why = _WHY.get(cause)
    if why is not None:
        severity, because = await _severity(session, patient.id, running, flow, now)
        if await _needs_item(session, patient.id, severity):
            summary = why + _PHONE + because + _answers(running, flow)
            raise_escalation(
                session=session,
                severity=severity,
                reason=Reason.OPTED_OUT,
                summary=summary,
                now=now,
                patient_id=patient.id,
                checkin_id=running.id if running is not None else None,
                message_id=message_id,
            )
    log.info("patient %s: texts stopped (%s)", patient.id, cause)
    return int(cancelled.rowcount or 0)  # type: ignore[attr-defined]


async def _flow_of(session: AsyncSession, running: Checkin | None) -> Flow | None:
    if running is None or running.flow_version is None:
        return None
    try:
        return await pinned(
            session=session,
            key=running.flow_key,
            version=running.flow_version,
            checksum=running.flow_checksum,
        )
    except FlowUnavailableError:
        return None


def _waiting_on(running: Checkin | None, flow: Flow | None) -> AskNode | None:
    """The question the interrupted check-in was waiting on."""
    if running is None or flow is None or not running.state:
        return None
    node = running.state.get("node")
    for candidate in flow.nodes:
        if isinstance(candidate, AskNode) and candidate.id == node:
            return candidate
    return None


async def _severity(
    session: AsyncSession,
    patient_id: int,
    running: Checkin | None,
    flow: Flow | None,
    now: datetime,
) -> tuple[Severity, str]:
    """The opt-out item's severity, and a sentence saying why when it is high."""
    asked = _waiting_on(running, flow)
    if asked is not None and asked.safety:
        return Severity.HIGH, " It came while a safety question was waiting for an answer."
    recent = await session.scalar(
        select(Escalation.id)
        .where(
            Escalation.patient_id == patient_id,
            Escalation.severity_rank <= SEVERITY_RANK[Severity.HIGH],
            Escalation.created_at >= now - RECENT_RISK,
        )
        .limit(1)
    )
    if recent is not None:
        return Severity.HIGH, f" It came within 72 hours of a high or critical item (#{recent})."
    return Severity.MODERATE, ""


async def _needs_item(session: AsyncSession, patient_id: int, severity: Severity) -> bool:
    """One open opt-out item per patient, unless this one is more urgent than it."""
    rank = await session.scalar(
        select(Escalation.severity_rank)
        .where(
            Escalation.patient_id == patient_id,
            Escalation.reason == Reason.OPTED_OUT,
            Escalation.status != EscalationStatus.RESOLVED,
        )
        .order_by(Escalation.severity_rank)
        .limit(1)
    )
    return rank is None or SEVERITY_RANK[severity] < rank


def _answers(running: Checkin | None, flow: Flow | None) -> str:
    """The interrupted check-in's answers so far, question by question."""
    if running is None or not running.state:
        return ""
    answers = running.state.get("answers") or {}
    if not answers:
        return f" The {running.flow_key} check-in was interrupted before any answer."
    lines = []
    questions = [n for n in flow.nodes if isinstance(n, AskNode)] if flow is not None else []
    known = {n.answer_key: pick(n.text, "en") for n in questions}
    for key, value in answers.items():
        if value is None:
            shown = "no answer"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        else:
            shown = str(value)
        lines.append(f"{known.get(key, key)} → {shown}")
    return f" Answers so far in {running.flow_key}: " + "; ".join(lines) + "."
