"""The worker's check-in jobs: start due check-ins, send reminders, expire, notice silence.

Every job claims a bounded batch in one statement (``FOR UPDATE SKIP LOCKED``
on PostgreSQL; the single writer on SQLite) and handles each row inside a
savepoint, so one bad row is logged and retried later without stopping the
others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from sqlalchemy import bindparam, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.services.conversations import (
    Applied,
    begin_columns,
    context_for,
    histories,
    resume_checkin,
    start_checkin,
)
from bot.services.escalations import open_escalation_exists, raise_escalation
from bot.services.flow_store import FlowUnavailableError, latest_published_with_checksum
from bot.services.holds import holding, routine
from bot.services.scheduling import (
    PatientLike,
    patient_can_receive,
    quiet_hours,
    quiet_now,
    zone,
)
from bot.services.steps import StepWrite, Target, write_steps
from bot.settings import Settings
from db.enums import CheckinStatus, PatientStatus, Severity
from db.models import Checkin, Patient
from db.session import Database
from flows import engine
from flows.engine import Expired, ReminderDue, ScoreHistory, SendMessage
from flows.model import Flow
from flows.problems import SourceError
from flows.reasons import Reason
from flows.schedule import defer_for_quiet_hours

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
BUSY_RECHECK = timedelta(minutes=5)
MISSED_STREAK = 2


@dataclass(slots=True)
class TickResult:
    claimed: int = 0
    started: int = 0
    missed: int = 0
    deferred: int = 0
    waiting: int = 0
    held: int = 0
    cancelled: int = 0
    reminded: int = 0
    expired: int = 0
    failed: int = 0
    outbound_ids: list[int] = field(default_factory=list)

    def count(self, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)

    @property
    def handled(self) -> int:
        return (
            self.started
            + self.missed
            + self.deferred
            + self.cancelled
            + self.reminded
            + self.expired
        )


async def claim_due(db: Database, now: datetime, limit: int) -> list[int]:
    """Lease up to ``limit`` due check-ins, oldest first; a crashed worker's lease runs out
    and they return. One statement (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
    LOCKED) RETURNING``): on PostgreSQL in autocommit, a single round trip."""
    due = (
        select(Checkin.id)
        .where(
            Checkin.status == CheckinStatus.SCHEDULED,
            Checkin.due_at <= now,
            or_(Checkin.lease_until.is_(None), Checkin.lease_until < now),
        )
        # oldest first; no tie-break on id, which would make PostgreSQL sort every row due
        # at the same moment (thousands after downtime) on each claim
        .order_by(Checkin.due_at)
        .limit(limit)
    )
    if not db.is_sqlite:
        due = due.with_for_update(skip_locked=True)
    claim = (
        update(Checkin)
        .where(Checkin.id.in_(due.scalar_subquery()))
        .values(lease_until=now + LEASE)
        .returning(Checkin.id, Checkin.due_at)
    )
    async with db.write_one() as conn:
        rows = (await conn.execute(claim)).all()
    return [row.id for row in sorted(rows, key=lambda r: (r.due_at, r.id))]


async def start_due(
    db: Database, settings: Settings, now: datetime, *, limit: int = 500
) -> TickResult:
    """Start what is due: the batch's first questions go through one call of the step
    writer in one transaction; if anything in it fails, the rows are retried one by one in
    savepoints, so a single bad row cannot hold the others back."""
    ids = await claim_due(db, now, limit)
    if not ids:
        return TickResult()
    try:
        result = await _start_batch(db, settings, now, ids)
    except Exception:
        log.exception("batch start of %d check-ins failed; retrying them one by one", len(ids))
        result = await _start_each(db, settings, now, ids)
    result.claimed = len(ids)
    return result


async def drain_due(
    db: Database,
    settings: Settings,
    now: Callable[[], datetime],
    *,
    limit: int,
    lanes: int,
    budget_s: float,
    after_batch: Callable[[TickResult], Awaitable[None]],
) -> int:
    """``start_due`` batch after batch while batches come back full, for up to ``budget_s``.

    On PostgreSQL ``lanes`` batches run at once, each in its own transaction: while one waits
    for the database another runs the engine, which nearly doubles one worker's rate. Claims
    skip each other's rows, and the patient lock in every batch keeps one conversation at a
    time. SQLite has one writer, so it runs one lane. Returns the rows handled.
    """
    deadline = monotonic() + budget_s

    async def lane() -> int:
        handled = 0
        while True:
            result = await start_due(db, settings, now(), limit=limit)
            await after_batch(result)
            handled += result.handled
            # claimed rows that could not start keep a lease, so this cannot spin on them
            if result.claimed < limit or monotonic() >= deadline:
                return handled

    # a task group: a lane that fails cancels the others (their batches roll back and stay
    # leased) instead of leaving them running past the tick
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(lane()) for _ in range(1 if db.is_sqlite else lanes)]
    return sum(t.result() for t in tasks)


async def _claimed_rows(session: AsyncSession, ids: list[int]) -> list[tuple[Checkin, Patient]]:
    rows = (
        await session.execute(
            select(Checkin, Patient)
            .join(Patient, Patient.id == Checkin.patient_id)
            .where(Checkin.id.in_(ids), Checkin.status == CheckinStatus.SCHEDULED)
            .order_by(Checkin.due_at, Checkin.id)
            # Locked until commit, and re-read after any lock wait (PostgreSQL): a row
            # another transaction started meanwhile (a worker whose lease ran out, an
            # inbound reply starting a waiting check-in) no longer matches, so it is never
            # started twice. Not SKIP LOCKED: a concurrent claim can hold a row it then
            # rejects for a moment, and skipping would strand the row until the lease ends.
            .with_for_update(of=Checkin)
        )
    ).all()
    return [(c, p) for c, p in rows]


# The patients of claimed check-ins, read without a lock (a check-in's patient never
# changes), so that a batch can lock its patients before their check-ins: the order in which
# the inbound handler locks them (a STOP holds the patient, then cancels the pending
# check-ins). In the other order a batch and a STOP could each wait for the other.
_PATIENTS_OF = select(Checkin.patient_id).where(Checkin.id.in_(bindparam("ids", expanding=True)))


async def _patients_of(conn: AsyncConnection, ids: list[int]) -> set[int]:
    return set((await conn.execute(_PATIENTS_OF, {"ids": ids})).scalars().all())


_LOCK_PATIENTS = (
    select(Patient.id)
    .where(Patient.id.in_(bindparam("pids", expanding=True)))
    .order_by(Patient.id)
    .with_for_update(key_share=True)
)
# One probe per patient in the select list: PostgreSQL runs it as a subplan on the
# (patient_id, status) index whatever its statistics say (as a semi-join on a freshly loaded
# table it scanned every active check-in).
_BUSY = select(
    Patient.id,
    select(literal(1))
    .where(Checkin.patient_id == Patient.id, Checkin.status == CheckinStatus.ACTIVE)
    .limit(1)
    .scalar_subquery(),
    select(literal(1)).where(holding(Patient.id)).limit(1).scalar_subquery(),
).where(Patient.id.in_(bindparam("pids", expanding=True)))


@dataclass(slots=True)
class _Patients:
    """What a batch must know of its patients before starting anything."""

    busy: set[int]  # already in a conversation
    held: set[int]  # on a risk hold (``bot.services.holds``)


async def _lock_patients(
    conn: AsyncConnection, patient_ids: set[int], *, sqlite: bool
) -> _Patients:
    """Lock the batch's patients, then see which already have a conversation or a hold.

    The lock (in id order, so two batches cannot deadlock; the inbound handler takes the same
    one) comes first and the read is a new statement after it: a concurrent batch or reply
    that started a conversation for one of them, an opt-out or a new escalation has committed
    by then and is seen, so one patient never gets two conversations at once. SQLite's single
    writer needs no lock.
    """
    found = _Patients(set(), set())
    if not patient_ids:
        return found
    pids = {"pids": sorted(patient_ids)}
    if not sqlite:
        await conn.execute(_LOCK_PATIENTS, pids)
    for patient_id, busy, held in (await conn.execute(_BUSY, pids)).all():
        if busy:
            found.busy.add(patient_id)
        if held:
            found.held.add(patient_id)
    return found


@dataclass(frozen=True, slots=True)
class _Hold:
    """Why a claimed check-in does not start now, and the columns that settle it."""

    kind: str  # a TickResult counter: cancelled, missed, waiting or deferred
    columns: dict[str, Any]


def _hold(patient: PatientLike, checkin: Checkin, known: _Patients, now: datetime) -> _Hold | None:
    """The decision both start paths share: None if the check-in may start now."""
    if not patient_can_receive(patient):
        outcome = "opted_out" if patient.opted_out_at else str(patient.status)
        return _Hold("cancelled", _ended(CheckinStatus.CANCELLED, outcome, now))
    held = patient.id in known.held and routine(checkin)
    if checkin.expires_at is not None and checkin.expires_at <= now:
        # Past its window (downtime, or waiting behind another conversation or a hold): never
        # sent late. One that a hold kept back is not the patient's silence.
        return _Hold("missed", _ended(CheckinStatus.MISSED, "held" if held else "missed", now))
    if held:
        return _Hold("held", {"lease_until": now + BUSY_RECHECK})
    if patient.id in known.busy:
        return _Hold("waiting", {"lease_until": now + BUSY_RECHECK})
    if quiet_now(patient, now):
        due_at = defer_for_quiet_hours(now, zone(patient), quiet_hours(patient))
        return _Hold("deferred", {"due_at": due_at, "lease_until": None})
    return None


def _ended(status: CheckinStatus, outcome: str, now: datetime) -> dict[str, Any]:
    return {"status": status, "outcome": outcome, "completed_at": now, "lease_until": None}


async def _triage(
    session: AsyncSession,
    checkin: Checkin,
    patient: Patient,
    known: _Patients,
    now: datetime,
    result: TickResult,
) -> bool:
    """``_hold`` on ORM rows; True if the check-in was settled."""
    hold = _hold(patient, checkin, known, now)
    if hold is None:
        return False
    result.count(hold.kind)
    for name, value in hold.columns.items():
        setattr(checkin, name, value)
    if hold.kind == "missed" and checkin.outcome == "missed":
        await note_silence(session=session, patient=patient, now=now)
    return True


class _Moved(Exception):
    """A start's guard failed inside a batch (the row changed meanwhile)."""


async def _start_batch(
    db: Database, settings: Settings, now: datetime, ids: list[int]
) -> TickResult:
    """The batch's plain starts (a first step that only sends) written together by
    ``steps.write_steps``; starts that answer, score, escalate or end at once go through
    ``start_checkin`` one at a time, in the same transaction."""
    result = TickResult()
    async with db.write() as session:
        conn = await session.connection()
        # patients first, then their check-ins (see _PATIENTS_OF)
        known = await _lock_patients(conn, await _patients_of(conn, ids), sqlite=db.is_sqlite)
        rows = await _claimed_rows(session, ids)
        history = await histories(session=session, patient_ids=sorted({p.id for _c, p in rows}))
        published: dict[str, tuple[int, Flow, str] | None] = {}
        writes: list[StepWrite] = []
        slow: list[tuple[Checkin, Patient]] = []
        for checkin, patient in rows:
            if await _triage(session, checkin, patient, known, now, result):
                continue
            key = checkin.flow_key
            if key not in published:
                try:
                    published[key] = await latest_published_with_checksum(session=session, key=key)
                except FlowUnavailableError:
                    published[key] = None
            found = published[key]
            if found is None:
                # left leased: it ends as missed at its expiry
                result.failed += 1
                log.error("check-in %s names flow %r with no published version", checkin.id, key)
                continue
            known.busy.add(patient.id)
            version, flow, checksum = found
            context = context_for(patient, settings, history.get(patient.id, {}))
            step = engine.start(flow, context, now)
            if not step.state.active or not all(isinstance(e, SendMessage) for e in step.events):
                slow.append((checkin, patient))
                continue
            target = Target(checkin.id, patient.id, patient.phone, checkin.revision, starting=True)
            begin = begin_columns(checkin, patient, version, flow, checksum, now)
            writes.append(StepWrite(target, step, begin=begin))
        written = await write_steps(session, writes, now)
        if any(w is None for w in written):
            raise _Moved
        outbound = [i for w in written if w is not None for i in w.ids]
        result.started += len(writes)
        for checkin, patient in slow:
            applied = await start_checkin(
                session=session,
                checkin=checkin,
                patient=patient,
                settings=settings,
                now=now,
                history=history.get(patient.id, {}),
            )
            if not applied.written:
                raise _Moved
            outbound.extend(applied.ids)
            result.started += 1 + len(applied.started)
        await session.flush()
        result.outbound_ids = outbound
    return result


async def _start_each(
    db: Database, settings: Settings, now: datetime, ids: list[int]
) -> TickResult:
    """The careful path: one savepoint per row."""
    result = TickResult()
    async with db.write() as session:
        conn = await session.connection()
        # patients first, then their check-ins (see _PATIENTS_OF)
        known = await _lock_patients(conn, await _patients_of(conn, ids), sqlite=db.is_sqlite)
        rows = await _claimed_rows(session, ids)
        # score histories for the whole batch in two queries instead of two per start
        history = await histories(session=session, patient_ids=sorted({p.id for _c, p in rows}))
        outbound: list[int] = []
        for checkin, patient in rows:
            # read before the savepoint: a rolled-back savepoint expires the row, and loading
            # it again from the except clause would need IO outside the greenlet
            checkin_id = checkin.id
            try:
                async with session.begin_nested():
                    applied = await _start_one(
                        session, settings, checkin, patient, known, now, result, history
                    )
                    if applied is not None:
                        outbound.extend(applied.ids)
            except Exception:
                result.failed += 1
                log.exception("could not start check-in %s; retried after its lease", checkin_id)
        await session.flush()
        result.outbound_ids = outbound
    return result


async def _start_one(
    session: AsyncSession,
    settings: Settings,
    checkin: Checkin,
    patient: Patient,
    known: _Patients,
    now: datetime,
    result: TickResult,
    history: dict[int, dict[str, ScoreHistory]],
) -> Applied | None:
    if await _triage(session, checkin, patient, known, now, result):
        return None
    applied = await start_checkin(
        session=session,
        checkin=checkin,
        patient=patient,
        settings=settings,
        now=now,
        history=history.get(patient.id, {}),
    )
    if not applied.written:
        result.failed += 1
        log.warning("check-in %s changed while it was starting; left for the next tick", checkin.id)
        return None
    known.busy.add(patient.id)
    result.started += 1 + len(applied.started)
    return applied


async def remind_due(
    db: Database, settings: Settings, now: datetime, *, limit: int = 500
) -> TickResult:
    """One reminder per check-in, never during quiet hours."""
    result = TickResult()
    async with db.write() as session:
        query = (
            select(Checkin, Patient)
            .join(Patient, Patient.id == Checkin.patient_id)
            .where(
                Checkin.status == CheckinStatus.ACTIVE,
                Checkin.reminder_at <= now,
                Checkin.reminder_sent_at.is_(None),
            )
            .order_by(Checkin.reminder_at)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(of=Checkin, skip_locked=True)
        outbound: list[int] = []
        broken: list[int] = []
        for checkin, patient in (await session.execute(query)).all():
            checkin_id = checkin.id  # see start_due
            try:
                async with session.begin_nested():
                    if quiet_now(patient, now):
                        checkin.reminder_at = defer_for_quiet_hours(
                            now, zone(patient), quiet_hours(patient)
                        )
                        result.deferred += 1
                        continue
                    applied = await resume_checkin(
                        session=session,
                        checkin=checkin,
                        patient=patient,
                        settings=settings,
                        input=ReminderDue(),
                        now=now,
                    )
                    checkin.reminder_sent_at = now
                    outbound.extend(applied.ids)
                    result.reminded += 1
            except (FlowUnavailableError, SourceError):
                # its pinned flow version cannot be loaded: no reminder is possible, ever
                result.failed += 1
                broken.append(checkin_id)
                log.exception("check-in %s: its flow version cannot be loaded", checkin_id)
            except Exception:
                result.failed += 1
                log.exception("reminder for check-in %s failed; retried next tick", checkin_id)
        if broken:
            await session.execute(
                update(Checkin).where(Checkin.id.in_(broken)).values(reminder_sent_at=now)
            )
        await session.flush()
        result.outbound_ids = outbound
    return result


async def expire_due(
    db: Database, settings: Settings, now: datetime, *, limit: int = 500
) -> TickResult:
    """Unfinished check-ins past their expiry end as expired; answers so far are kept and scored."""
    result = TickResult()
    async with db.write() as session:
        query = (
            select(Checkin, Patient)
            .join(Patient, Patient.id == Checkin.patient_id)
            .where(Checkin.status == CheckinStatus.ACTIVE, Checkin.expires_at <= now)
            .order_by(Checkin.expires_at)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(of=Checkin, skip_locked=True)
        outbound: list[int] = []
        broken: list[int] = []
        for checkin, patient in (await session.execute(query)).all():
            checkin_id = checkin.id  # see start_due
            try:
                async with session.begin_nested():
                    applied = await resume_checkin(
                        session=session,
                        checkin=checkin,
                        patient=patient,
                        settings=settings,
                        input=Expired(),
                        now=now,
                    )
                    if checkin.status is CheckinStatus.ACTIVE:
                        # the engine had already ended it; close the row anyway
                        checkin.status = CheckinStatus.EXPIRED
                        checkin.completed_at = now
                    outbound.extend(applied.ids)
                    result.expired += 1
                    await note_silence(session=session, patient=patient, now=now)
            except (FlowUnavailableError, SourceError):
                # its pinned flow version cannot be loaded: close it rather than retry forever
                result.failed += 1
                broken.append(checkin_id)
                log.exception("check-in %s: its flow version cannot be loaded", checkin_id)
            except Exception:
                result.failed += 1
                log.exception("expiring check-in %s failed; retried next tick", checkin_id)
        if broken:
            await session.execute(
                update(Checkin)
                .where(Checkin.id.in_(broken))
                .values(
                    status=CheckinStatus.EXPIRED,
                    outcome="flow_unavailable",
                    completed_at=now,
                    lease_until=None,
                )
            )
        await session.flush()
        result.outbound_ids = outbound
    return result


async def note_silence(*, session: AsyncSession, patient: Patient, now: datetime) -> None:
    """Two check-ins in a row expired or missed: a moderate "not responding" escalation."""
    await session.flush()
    last = (
        await session.scalars(
            select(Checkin.status)
            .where(
                Checkin.patient_id == patient.id,
                Checkin.status.in_(
                    (CheckinStatus.COMPLETED, CheckinStatus.EXPIRED, CheckinStatus.MISSED)
                ),
            )
            .order_by(Checkin.completed_at.desc(), Checkin.id.desc())
            .limit(MISSED_STREAK)
        )
    ).all()
    silent = (CheckinStatus.EXPIRED, CheckinStatus.MISSED)
    if len(last) < MISSED_STREAK or not all(s in silent for s in last):
        return
    if patient.status is not PatientStatus.ACTIVE:
        return
    if await open_escalation_exists(
        session=session, patient_id=patient.id, reason=Reason.NOT_RESPONDING
    ):
        return
    raise_escalation(
        session=session,
        severity=Severity.MODERATE,
        reason=Reason.NOT_RESPONDING,
        summary=f"The last {MISSED_STREAK} check-ins expired or were missed without an answer.",
        now=now,
        patient_id=patient.id,
    )
