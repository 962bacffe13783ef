"""Running check-in conversations: start one, feed it an input, persist what the engine says.

The engine (``flows.engine``) is pure; every step it computes is written by
``bot.services.steps.write_step`` in the caller's transaction, so a step's
answers, scores, escalations, outbox messages and state commit together or
not at all. Hand-overs come from ``engine.handover``, as in the simulator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.escalations import raise_escalation
from bot.services.flow_store import (
    FlowUnavailableError,
    latest_published_with_checksum,
    pinned,
)
from bot.services.holds import hold_of, routine
from bot.services.outbox import Claimed
from bot.services.scheduling import PatientLike, patient_can_receive, quiet_now, start_windows
from bot.services.steps import Target, write_step
from bot.settings import Settings
from db.enums import CheckinStatus, Severity
from db.models import Checkin, Patient, Score
from flows import engine
from flows.durations import duration_seconds
from flows.engine import ConversationState, Input, Outcome, ScoreHistory, Step
from flows.model import AnswerValue, Flow
from flows.reasons import Reason

log = logging.getLogger(__name__)

HISTORY_LIMIT = 52
DEFAULT_EXPIRY_S = 24 * 3600


@dataclass(slots=True)
class Applied:
    """What one input produced: outbound messages to send after commit, escalations raised,
    check-ins started. ``written`` is False when the step's guard failed (nothing written)."""

    ids: list[int] = field(default_factory=list)
    claimed: list[Claimed] = field(default_factory=list)
    escalations: list[Severity] = field(default_factory=list)
    ended: bool = False
    started: list[int] = field(default_factory=list)
    written: bool = True

    def merge(self, other: Applied) -> None:
        self.ids.extend(other.ids)
        self.claimed.extend(other.claimed)
        self.escalations.extend(other.escalations)
        self.started.extend(other.started)


def build_history(rows: list[tuple[str, float, datetime]]) -> dict[str, ScoreHistory]:
    """Score rows newest first → previous totals per score, oldest first, with when each
    was recorded."""
    totals: dict[str, list[tuple[float, float]]] = {}
    for instrument, total, created_at in rows:
        bucket = totals.setdefault(instrument, [])
        if len(bucket) < HISTORY_LIMIT:
            bucket.append((total, _aware(created_at).timestamp()))
    return {
        name: ScoreHistory(
            totals=tuple(t for t, _ in reversed(values)),
            at=tuple(at for _, at in reversed(values)),
        )
        for name, values in totals.items()
    }


async def score_history(*, session: AsyncSession, patient_id: int) -> dict[str, ScoreHistory]:
    return (await histories(session=session, patient_ids=[patient_id]))[patient_id]


async def histories(
    *, session: AsyncSession, patient_ids: list[int]
) -> dict[int, dict[str, ScoreHistory]]:
    """Each patient's score history in one query (the dispatcher reads a batch's at once)."""
    if not patient_ids:
        return {}
    rows: dict[int, list[tuple[str, float, datetime]]] = {pid: [] for pid in patient_ids}
    for pid, instrument, total, created_at in (
        await session.execute(
            select(Score.patient_id, Score.instrument, Score.total, Score.created_at)
            .where(Score.patient_id.in_(patient_ids))
            .order_by(Score.patient_id, Score.created_at.desc(), Score.id.desc())
        )
    ).all():
        rows[pid].append((instrument, total, created_at))
    return {pid: build_history(rows[pid]) for pid in patient_ids}


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def context_for(
    patient: PatientLike,
    settings: Settings,
    history: dict[str, ScoreHistory],
    prefill: dict[str, AnswerValue] | None = None,
) -> engine.Context:
    return engine.Context(
        first_name=patient.first_name,
        language=patient.language or "en",
        clinic_name=settings.clinic_name,
        clinic_phone=settings.clinic_phone,
        history=history,
        prefill=prefill or {},
        page_after_minutes=settings.page_high_after_minutes,
        clinic_hours=settings.clinic_hours,
    )


def start_columns(
    *,
    patient: PatientLike,
    version: int,
    flow: Flow,
    checksum: str,
    now: datetime,
    expiry_after_s: int | None,
    reminder_after_s: int | None,
) -> dict[str, Any]:
    """The check-in columns that change when it starts ``now`` (ORM and bulk paths share it)."""
    if expiry_after_s is None:
        expiry_after_s = duration_seconds(flow.expiry.after) if flow.expiry else DEFAULT_EXPIRY_S
    if reminder_after_s is None and flow.reminder is not None:
        reminder_after_s = duration_seconds(flow.reminder.after)
    reminder_at, expires_at = start_windows(patient, now, reminder_after_s, expiry_after_s)
    return {
        "flow_version": version,
        "flow_checksum": checksum,
        "status": CheckinStatus.ACTIVE,
        "started_at": now,
        "lease_until": None,
        "expiry_after_s": expiry_after_s,
        "reminder_after_s": reminder_after_s,
        "reminder_at": reminder_at,
        "expires_at": expires_at,
    }


async def start_checkin(
    *,
    session: AsyncSession,
    checkin: Checkin,
    patient: Patient,
    settings: Settings,
    now: datetime,
    prefill: dict[str, AnswerValue] | None = None,
    history: dict[str, ScoreHistory] | None = None,
    claim: bool = False,
) -> Applied:
    """Pin the newest published version, run ``engine.start`` and persist its events."""
    if checkin.status is not CheckinStatus.SCHEDULED or checkin.state is not None:
        return Applied(written=False)
    version, flow, checksum = await latest_published_with_checksum(
        session=session, key=checkin.flow_key
    )
    if history is None:
        history = await score_history(session=session, patient_id=patient.id)
    step = engine.start(flow, context_for(patient, settings, history, prefill), now)
    return await _persist(
        session=session,
        checkin=checkin,
        patient=patient,
        step=step,
        settings=settings,
        now=now,
        begin=begin_columns(checkin, patient, version, flow, checksum, now),
        claim=claim,
    )


def begin_columns(
    checkin: Checkin, patient: Patient, version: int, flow: Flow, checksum: str, now: datetime
) -> dict[str, Any]:
    return start_columns(
        patient=patient,
        version=version,
        flow=flow,
        checksum=checksum,
        now=now,
        expiry_after_s=checkin.expiry_after_s,
        reminder_after_s=checkin.reminder_after_s,
    )


async def resume_checkin(
    *,
    session: AsyncSession,
    checkin: Checkin,
    patient: Patient,
    settings: Settings,
    input: Input,
    now: datetime,
    message_id: int | None = None,
    phone: str | None = None,
    claim: bool = False,
) -> Applied:
    """Feed one input (a reply from ``phone``, a reminder, the expiry) to an active
    conversation."""
    if checkin.status is not CheckinStatus.ACTIVE or checkin.state is None:
        return Applied(written=False)
    assert checkin.flow_version is not None
    flow = await pinned(
        session=session,
        key=checkin.flow_key,
        version=checkin.flow_version,
        checksum=checkin.flow_checksum,
    )
    state = ConversationState.from_json(checkin.state)
    step = engine.resume(flow, state, input, now)
    return await _persist(
        session=session,
        checkin=checkin,
        patient=patient,
        step=step,
        settings=settings,
        now=now,
        message_id=message_id,
        phone=phone,
        claim=claim,
    )


async def _persist(
    *,
    session: AsyncSession,
    checkin: Checkin,
    patient: Patient,
    step: Step,
    settings: Settings,
    now: datetime,
    begin: dict[str, Any] | None = None,
    message_id: int | None = None,
    phone: str | None = None,
    claim: bool = False,
) -> Applied:
    """Write one step through the step writer, then what its end leads to: the hand-over's
    first question, or the next check-in already waiting."""
    target = Target(
        checkin_id=checkin.id,
        patient_id=patient.id,
        phone=phone or patient.phone,
        revision=checkin.revision or 0,
        starting=begin is not None,
    )
    written = await write_step(
        session,
        target=target,
        step=step,
        now=now,
        begin=begin,
        message_id=message_id,
        claim=claim,
    )
    if written is None:
        return Applied(written=False)
    applied = Applied(ids=written.ids, claimed=written.claimed, escalations=written.escalations)
    ended = written.ended
    if ended is None:
        return applied
    applied.ended = True
    key = engine.handover_key(step)
    if key:
        applied.merge(
            await _handover(
                session=session,
                previous=checkin,
                patient=patient,
                ended=step,
                flow_key=key,
                settings=settings,
                now=now,
                claim=claim,
            )
        )
    elif ended.outcome is not Outcome.CRISIS:
        applied.merge(
            await start_waiting(
                session=session, patient=patient, settings=settings, now=now, claim=claim
            )
        )
    return applied


async def start_waiting(
    *,
    session: AsyncSession,
    patient: Patient,
    settings: Settings,
    now: datetime,
    claim: bool = False,
) -> Applied:
    """One conversation at a time: when one ends, the next one already due starts at once,
    unless its window has passed or it is the patient's quiet hours (the worker sends it then)."""
    if not patient_can_receive(patient):
        return Applied()
    # Ones whose window has passed are left for the dispatcher to mark missed; the next one
    # still inside its window must not wait behind them. A row another transaction holds
    # (a worker starting it) is skipped, so it cannot be started twice.
    waiting = await session.scalar(
        select(Checkin)
        .where(
            Checkin.patient_id == patient.id,
            Checkin.status == CheckinStatus.SCHEDULED,
            Checkin.due_at <= now,
            or_(Checkin.expires_at.is_(None), Checkin.expires_at > now),
        )
        .order_by(Checkin.due_at, Checkin.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if waiting is None:
        return Applied()
    if quiet_now(patient, now):
        return Applied()
    if routine(waiting) and await hold_of(session, patient.id) is not None:
        # the result that just ended (or an earlier one) waits for a clinician first
        return Applied()
    applied = await start_checkin(
        session=session, checkin=waiting, patient=patient, settings=settings, now=now, claim=claim
    )
    applied.started.append(waiting.id)
    return applied


async def _handover(
    *,
    session: AsyncSession,
    previous: Checkin,
    patient: Patient,
    ended: Step,
    flow_key: str,
    settings: Settings,
    now: datetime,
    claim: bool,
) -> Applied:
    """Start the next flow at once (PHQ-2 → PHQ-9, item 9 → C-SSRS) as ``engine.handover``
    says, in a check-in of its own linked to the one that ended."""
    try:
        version, flow, checksum = await latest_published_with_checksum(
            session=session, key=flow_key
        )
    except FlowUnavailableError:
        log.error(
            "check-in %s hands over to %r, which has no published version", previous.id, flow_key
        )
        raise_escalation(
            session=session,
            severity=Severity.HIGH,
            reason=Reason.FLOW_STALLED,
            summary=f"The {previous.flow_key} check-in should have continued with {flow_key}, "
            "which has no published version; follow up with the patient directly.",
            now=now,
            patient_id=patient.id,
            checkin_id=previous.id,
        )
        return Applied(escalations=[Severity.HIGH])
    follow = Checkin(
        patient_id=patient.id,
        flow_key=flow_key,
        enrollment_id=previous.enrollment_id,
        treatment_id=previous.treatment_id,
        previous_id=previous.id,
        status=CheckinStatus.SCHEDULED,
        due_at=now,
        reminder_after_s=previous.reminder_after_s,
        expiry_after_s=previous.expiry_after_s,
        revision=0,
        created_at=now,
    )
    session.add(follow)
    await session.flush()
    applied = await _persist(
        session=session,
        checkin=follow,
        patient=patient,
        step=engine.handover(ended, flow, now),
        settings=settings,
        now=now,
        begin=begin_columns(follow, patient, version, flow, checksum, now),
        claim=claim,
    )
    applied.started.append(follow.id)
    return applied
