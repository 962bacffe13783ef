"""Running check-in conversations: start one, feed it an input, persist what the engine says.

The engine (``flows.engine``) is pure; this module turns its events into rows
in the caller's transaction: answers, scores, escalations, outbox messages and
the new conversation state, so they all commit together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.escalations import escalation_row
from bot.services.flow_store import latest_published_with_checksum, pinned
from bot.services.outbox import message_row
from bot.services.scheduling import PatientLike, patient_can_receive, quiet_now, start_windows
from bot.settings import Settings
from db.enums import CheckinStatus
from db.models import Answer, Checkin, Escalation, Message, Patient, Score, Treatment
from flows import engine
from flows.durations import parse_duration
from flows.engine import (
    AnswerRecorded,
    ConversationEnded,
    ConversationState,
    EscalationRequested,
    Input,
    Outcome,
    ScoreComputed,
    ScoreHistory,
    SendMessage,
    Step,
)
from flows.model import AnswerValue, Flow

log = logging.getLogger(__name__)

HISTORY_LIMIT = 52
DEFAULT_EXPIRY_S = 24 * 3600

_OUTCOME_STATUS = {
    Outcome.COMPLETED: CheckinStatus.COMPLETED,
    Outcome.EXPIRED: CheckinStatus.EXPIRED,
    Outcome.CRISIS: CheckinStatus.COMPLETED,
}


@dataclass(slots=True)
class Applied:
    """What one input produced: outbound rows to send after commit, and what ended."""

    outbound: list[Message] = field(default_factory=list)
    ended: bool = False
    escalations: int = 0
    started: list[Checkin] = field(default_factory=list)

    def merge(self, other: Applied) -> None:
        self.outbound.extend(other.outbound)
        self.escalations += other.escalations
        self.started.extend(other.started)


@lru_cache(maxsize=256)
def _seconds(duration: str) -> int:
    return int(parse_duration(duration).total_seconds())


def build_history(
    rows: list[tuple[str, float, datetime]], last_treatment: datetime | None
) -> dict[str, ScoreHistory]:
    """Score rows newest first → previous totals per score, oldest first, and how many of
    them came after the latest treatment."""
    totals: dict[str, list[float]] = {}
    after: dict[str, int] = {}
    for instrument, total, created_at in rows:
        bucket = totals.setdefault(instrument, [])
        if len(bucket) >= HISTORY_LIMIT:
            continue
        bucket.append(total)
        if last_treatment is not None and created_at >= last_treatment:
            after[instrument] = after.get(instrument, 0) + 1
    return {
        name: ScoreHistory(
            totals=tuple(reversed(values)),
            since_treatment=None if last_treatment is None else after.get(name, 0),
        )
        for name, values in totals.items()
    }


async def score_history(*, session: AsyncSession, patient_id: int) -> dict[str, ScoreHistory]:
    last_treatment = await session.scalar(
        select(Treatment.administered_at)
        .where(Treatment.patient_id == patient_id)
        .order_by(Treatment.administered_at.desc())
        .limit(1)
    )
    rows = (
        await session.execute(
            select(Score.instrument, Score.total, Score.created_at)
            .where(Score.patient_id == patient_id)
            .order_by(Score.created_at.desc(), Score.id.desc())
            .limit(HISTORY_LIMIT * 8)
        )
    ).all()
    return build_history([(r[0], r[1], r[2]) for r in rows], last_treatment)


async def histories(
    *, session: AsyncSession, patient_ids: list[int]
) -> dict[int, dict[str, ScoreHistory]]:
    """``score_history`` for many patients in two queries (the dispatcher's batches)."""
    if not patient_ids:
        return {}
    treated = {
        pid: at
        for pid, at in (
            await session.execute(
                select(Treatment.patient_id, func.max(Treatment.administered_at))
                .where(Treatment.patient_id.in_(patient_ids))
                .group_by(Treatment.patient_id)
            )
        ).all()
    }
    rows: dict[int, list[tuple[str, float, datetime]]] = {pid: [] for pid in patient_ids}
    for pid, instrument, total, created_at in (
        await session.execute(
            select(Score.patient_id, Score.instrument, Score.total, Score.created_at)
            .where(Score.patient_id.in_(patient_ids))
            .order_by(Score.patient_id, Score.created_at.desc(), Score.id.desc())
        )
    ).all():
        rows[pid].append((instrument, total, created_at))
    return {pid: build_history(rows[pid], _aware(treated.get(pid))) for pid in patient_ids}


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
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
    )


def begin(
    checkin: Checkin, patient: Patient, version: int, flow: Flow, checksum: str, now: datetime
) -> None:
    """Pin the version and set the windows of a check-in that starts ``now``."""
    columns = start_columns(
        patient=patient,
        version=version,
        flow=flow,
        checksum=checksum,
        now=now,
        expiry_after_s=checkin.expiry_after_s,
        reminder_after_s=checkin.reminder_after_s,
    )
    for name, value in columns.items():
        setattr(checkin, name, value)


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
        expiry_after_s = _seconds(flow.expiry.after) if flow.expiry else DEFAULT_EXPIRY_S
    if reminder_after_s is None and flow.reminder is not None:
        reminder_after_s = _seconds(flow.reminder.after)
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
) -> Applied:
    """Pin the newest published version, run ``engine.start`` and persist its events."""
    if checkin.status is not CheckinStatus.SCHEDULED or checkin.state is not None:
        return Applied()
    version, flow, checksum = await latest_published_with_checksum(
        session=session, key=checkin.flow_key
    )
    begin(checkin, patient, version, flow, checksum, now)
    history = await score_history(session=session, patient_id=patient.id)
    step = engine.start(flow, context_for(patient, settings, history, prefill), now)
    return await apply_step(
        session=session, checkin=checkin, patient=patient, step=step, settings=settings, now=now
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
) -> Applied:
    """Feed one input (a reply, a reminder, the expiry) to an active conversation."""
    if checkin.status is not CheckinStatus.ACTIVE or checkin.state is None:
        return Applied()
    assert checkin.flow_version is not None
    flow = await pinned(
        session=session,
        key=checkin.flow_key,
        version=checkin.flow_version,
        checksum=checkin.flow_checksum,
    )
    state = ConversationState.from_json(checkin.state)
    step = engine.resume(flow, state, input, now)
    return await apply_step(
        session=session,
        checkin=checkin,
        patient=patient,
        step=step,
        settings=settings,
        now=now,
        message_id=message_id,
    )


@dataclass(slots=True)
class StepRows:
    """What one engine step writes, as column values: the ORM path (``apply_step``) and the
    inbound handler's bulk path build their rows from the same function."""

    state: dict[str, Any]
    answers: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    ended: ConversationEnded | None = None


def step_rows(
    step: Step,
    *,
    checkin_id: int,
    patient_id: int,
    phone: str,
    now: datetime,
    message_id: int | None = None,
) -> StepRows:
    rows = StepRows(state=step.state.to_json())
    for event in step.events:
        if isinstance(event, SendMessage):
            rows.messages.append(
                message_row(
                    phone=phone,
                    body=event.text,
                    purpose=str(event.purpose),
                    now=now,
                    patient_id=patient_id,
                    checkin_id=checkin_id,
                )
            )
        elif isinstance(event, AnswerRecorded):
            rows.answers.append(
                {
                    "checkin_id": checkin_id,
                    "message_id": message_id if event.raw is not None else None,
                    "question_key": event.key,
                    "raw_text": event.raw,
                    "value": event.value,
                    "created_at": now,
                }
            )
        elif isinstance(event, ScoreComputed):
            rows.scores.append(
                {
                    "checkin_id": checkin_id,
                    "patient_id": patient_id,
                    "instrument": event.name,
                    "total": event.total,
                    "band": event.band,
                    "flags": list(event.flags),
                    "complete": event.complete,
                    "created_at": now,
                }
            )
        elif isinstance(event, EscalationRequested):
            rows.escalations.append(
                escalation_row(
                    severity=event.severity,
                    reason=event.reason,
                    summary=event.summary,
                    now=now,
                    patient_id=patient_id,
                    checkin_id=checkin_id,
                    message_id=message_id,
                )
            )
        elif isinstance(event, ConversationEnded):
            rows.ended = event
    return rows


def ended_columns(ended: ConversationEnded, now: datetime) -> dict[str, Any]:
    """The check-in columns that change when its conversation ends."""
    return {
        "status": _OUTCOME_STATUS[ended.outcome],
        "outcome": str(ended.outcome),
        "completed_at": now,
        "lease_until": None,
    }


async def apply_step(
    *,
    session: AsyncSession,
    checkin: Checkin,
    patient: Patient,
    step: Step,
    settings: Settings,
    now: datetime,
    message_id: int | None = None,
) -> Applied:
    applied = Applied()
    rows = step_rows(
        step,
        checkin_id=checkin.id,
        patient_id=patient.id,
        phone=patient.phone,
        now=now,
        message_id=message_id,
    )
    checkin.state = rows.state
    for values in rows.messages:
        message = Message(**values)
        session.add(message)
        applied.outbound.append(message)
    session.add_all([Answer(**values) for values in rows.answers])
    session.add_all([Score(**values) for values in rows.scores])
    session.add_all([Escalation(**values) for values in rows.escalations])
    applied.escalations = len(rows.escalations)
    ended = rows.ended
    if ended is not None:
        applied.ended = True
        for name, value in ended_columns(ended, now).items():
            setattr(checkin, name, value)
        await session.flush()
        if ended.handover and ended.outcome is Outcome.COMPLETED:
            applied.merge(
                await _handover(
                    session=session,
                    previous=checkin,
                    patient=patient,
                    flow_key=ended.handover,
                    carry=dict(ended.carry),
                    settings=settings,
                    now=now,
                )
            )
        elif ended.outcome is not Outcome.CRISIS:
            applied.merge(
                await start_waiting(session=session, patient=patient, settings=settings, now=now)
            )
    return applied


async def start_waiting(
    *, session: AsyncSession, patient: Patient, settings: Settings, now: datetime
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
    applied = await start_checkin(
        session=session, checkin=waiting, patient=patient, settings=settings, now=now
    )
    applied.started.append(waiting)
    return applied


async def _handover(
    *,
    session: AsyncSession,
    previous: Checkin,
    patient: Patient,
    flow_key: str,
    carry: dict[str, AnswerValue],
    settings: Settings,
    now: datetime,
) -> Applied:
    """Start the next flow at once (PHQ-2 → PHQ-9, item 9 → C-SSRS), carrying the answers."""
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
        created_at=now,
    )
    session.add(follow)
    await session.flush()
    applied = await start_checkin(
        session=session,
        checkin=follow,
        patient=patient,
        settings=settings,
        now=now,
        prefill=carry,
    )
    applied.started.append(follow)
    return applied
