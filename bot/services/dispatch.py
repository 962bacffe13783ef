"""The worker's check-in jobs: start due check-ins, send reminders, expire, notice silence.

Every job claims a bounded batch in one statement (``FOR UPDATE SKIP LOCKED``
on PostgreSQL; the single writer on SQLite) and handles each row inside a
savepoint, so one bad row is logged and retried later without stopping the
others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from sqlalchemy import Update, bindparam, insert, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.services.conversations import (
    Applied,
    apply_step,
    begin,
    context_for,
    histories,
    resume_checkin,
    start_checkin,
    start_columns,
)
from bot.services.escalations import open_escalation_exists, raise_escalation
from bot.services.flow_store import FlowUnavailableError, parse_cached
from bot.services.outbox import message_row
from bot.services.scheduling import (
    PatientLike,
    PatientRow,
    patient_can_receive,
    quiet_hours,
    quiet_now,
    zone,
)
from bot.settings import Settings
from db.enums import CheckinStatus, PatientStatus, Severity, VersionStatus
from db.models import Checkin, FlowVersion, Message, Patient
from db.session import Database
from flows import engine
from flows.engine import Expired, ReminderDue, SendMessage, Step
from flows.model import Flow
from flows.problems import SourceError
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
    """Start what is due. The batch runs in one transaction with prefetched flows and score
    histories and one bulk insert of first messages; if that transaction fails, the rows are
    retried one by one in savepoints so a single bad row cannot hold the others back."""
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
_PATIENT_COLUMNS = (
    Patient.id,
    Patient.first_name,
    Patient.phone,
    Patient.language,
    Patient.timezone,
    Patient.quiet_start,
    Patient.quiet_end,
    Patient.status,
    Patient.opted_out_at,
)
_BUSY = select(
    *_PATIENT_COLUMNS,
    select(literal(1))
    .where(Checkin.patient_id == Patient.id, Checkin.status == CheckinStatus.ACTIVE)
    .limit(1)
    .scalar_subquery(),
).where(Patient.id.in_(bindparam("pids", expanding=True)))


async def _lock_patients(
    conn: AsyncConnection, patient_ids: set[int], *, sqlite: bool
) -> tuple[dict[int, PatientRow], set[int]]:
    """Lock the batch's patients, then read them and see which already have a conversation.

    The lock (in id order, so two batches cannot deadlock; the inbound handler takes the same
    one) comes first and the read is a new statement after it: a concurrent batch or reply
    that started a conversation for one of them, or an opt-out, has committed by then and is
    seen, so one patient never gets two conversations at once. SQLite's single writer needs
    no lock. Each patient is read by its primary key (no join with the check-ins, whose plan
    on a freshly loaded table was a scan of every patient).
    """
    if not patient_ids:
        return {}, set()
    pids = {"pids": sorted(patient_ids)}
    if not sqlite:
        await conn.execute(_LOCK_PATIENTS, pids)
    patients: dict[int, PatientRow] = {}
    busy: set[int] = set()
    for row in (await conn.execute(_BUSY, pids)).all():
        patients[row[0]] = PatientRow(*row[:-1])
        if row[-1]:
            busy.add(row[0])
    return patients, busy


async def _lock_busy(conn: AsyncConnection, patient_ids: set[int], *, sqlite: bool) -> set[int]:
    """``_lock_patients``' busy set, for the row-by-row path (which has ORM patients)."""
    return (await _lock_patients(conn, patient_ids, sqlite=sqlite))[1]


async def _published_flows(
    session: AsyncSession, keys: set[str]
) -> dict[str, tuple[int, Flow, str]]:
    """The newest published version of each key, in one query (retired keys are absent)."""
    out: dict[str, tuple[int, Flow, str]] = {}
    rows = (
        await session.execute(
            select(
                FlowVersion.key,
                FlowVersion.version,
                FlowVersion.checksum,
                FlowVersion.source,
                FlowVersion.status,
            )
            .where(FlowVersion.key.in_(keys), FlowVersion.version.is_not(None))
            .order_by(FlowVersion.key, FlowVersion.version.desc())
        )
    ).all()
    seen: set[str] = set()
    for key, version, digest, source, status in rows:
        if key in seen:
            continue
        seen.add(key)
        if status is VersionStatus.PUBLISHED and version is not None:
            try:
                out[key] = (version, parse_cached(key, version, digest, source), digest)
            except SourceError:
                log.error("published flow %s v%s does not load", key, version)
    return out


@dataclass(frozen=True, slots=True)
class _Due:
    id: int
    flow_key: str
    expires_at: datetime | None
    reminder_after_s: int | None
    expiry_after_s: int | None
    patient: PatientRow


# Built once; run on the session's Core connection: ORM objects cost more than the rest of
# a start together (identity map, attribute events, one UPDATE per row at flush).
_DUE_ROWS = (
    select(
        Checkin.id,
        Checkin.flow_key,
        Checkin.expires_at,
        Checkin.reminder_after_s,
        Checkin.expiry_after_s,
        Checkin.patient_id,
        Checkin.status,
    )
    # only the ids: the status is checked on the rows read (``_start_batch``). With the status
    # in the WHERE, PostgreSQL's plan for this cached statement came to walk the status index
    # through every scheduled row (225 ms per batch with 80,000 of them waiting)
    .where(Checkin.id.in_(bindparam("ids", expanding=True)))
    .order_by(Checkin.due_at, Checkin.id)
    # see _claimed_rows: locked until commit and re-read after any lock wait
    .with_for_update()
)
_BY_ID = Checkin.id == bindparam("b_id")
_HOLD_STATEMENTS: dict[tuple[str, ...], Update] = {}


def _hold_statement(columns: tuple[str, ...]) -> Update:
    """``UPDATE checkins SET <columns> WHERE id`` for executemany, one per column set."""
    statement = _HOLD_STATEMENTS.get(columns)
    if statement is None:
        statement = (
            update(Checkin).where(_BY_ID).values({name: bindparam(f"b_{name}") for name in columns})
        )
        _HOLD_STATEMENTS[columns] = statement
    return statement


_BEGIN = (
    update(Checkin)
    .where(_BY_ID)
    .values(
        flow_version=bindparam("b_version"),
        flow_checksum=bindparam("b_checksum"),
        status=CheckinStatus.ACTIVE,
        started_at=bindparam("b_at"),
        lease_until=None,
        expiry_after_s=bindparam("b_expiry_s"),
        reminder_after_s=bindparam("b_reminder_s"),
        reminder_at=bindparam("b_reminder_at"),
        expires_at=bindparam("b_expires_at"),
        state=bindparam("b_state"),
    )
)
_INSERT_MESSAGES = insert(Message).returning(Message.id)
# ``_BEGIN`` for PostgreSQL as one statement over arrays: an executemany runs the UPDATE once
# per row (a bind, an execution and an executor start-up each); this runs it once per batch.
_BEGIN_COLUMNS = (
    ("b_id", "integer"),
    ("b_version", "integer"),
    ("b_checksum", "varchar"),
    ("b_at", "timestamptz"),
    ("b_expiry_s", "integer"),
    ("b_reminder_s", "integer"),
    ("b_reminder_at", "timestamptz"),
    ("b_expires_at", "timestamptz"),
    ("b_state", "jsonb"),
)
_BEGIN_PG = text(
    "UPDATE checkins SET flow_version = v.b_version, flow_checksum = v.b_checksum, "
    f"status = '{CheckinStatus.ACTIVE.value}', started_at = v.b_at, lease_until = NULL, "
    "expiry_after_s = v.b_expiry_s, reminder_after_s = v.b_reminder_s, "
    "reminder_at = v.b_reminder_at, expires_at = v.b_expires_at, state = v.b_state "
    "FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _BEGIN_COLUMNS)
    + ") AS v("
    + ", ".join(name for name, _ in _BEGIN_COLUMNS)
    + ") WHERE checkins.id = v.b_id"
)


def _begin_arrays(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """``_BEGIN``'s executemany rows as ``_BEGIN_PG``'s arrays (the state as JSON text)."""
    arrays = {name: [row[name] for row in rows] for name, _ in _BEGIN_COLUMNS}
    arrays["b_state"] = [json.dumps(state) for state in arrays["b_state"]]
    return arrays


def _due_rows(rows: Sequence[Sequence[Any]], patients: dict[int, PatientRow]) -> list[_Due]:
    return [
        _Due(
            id=row[0],
            flow_key=row[1],
            expires_at=row[2],
            reminder_after_s=row[3],
            expiry_after_s=row[4],
            patient=patients[row[5]],
        )
        for row in rows
    ]


@dataclass(slots=True)
class _Batch:
    """The batch's writes, collected per statement and sent as executemany."""

    held: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)
    begin: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, object]] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    slow: list[tuple[_Due, tuple[int, Flow, str], Step]] = field(default_factory=list)

    async def write(self, conn: AsyncConnection) -> None:
        for columns, rows in self.held.items():
            await conn.execute(_hold_statement(columns), rows)
        if self.begin:
            if conn.dialect.name == "postgresql":
                await conn.execute(_BEGIN_PG, _begin_arrays(self.begin))
            else:
                await conn.execute(_BEGIN, self.begin)


async def _start_batch(
    db: Database, settings: Settings, now: datetime, ids: list[int]
) -> TickResult:
    result = TickResult()
    async with db.write() as session:
        conn = await session.connection()
        # patients first, then their check-ins (see _PATIENTS_OF)
        patients, busy = await _lock_patients(
            conn, await _patients_of(conn, ids), sqlite=db.is_sqlite
        )
        # the claimed rows still scheduled (a pause or an opt-out may have cancelled one)
        claimed = [
            r
            for r in (await conn.execute(_DUE_ROWS, {"ids": ids})).all()
            if r[-1] == CheckinStatus.SCHEDULED
        ]
        rows = _due_rows(claimed, patients)
        startable = [
            d
            for d in rows
            if patient_can_receive(d.patient)
            and not (d.expires_at is not None and d.expires_at <= now)
        ]
        flows = await _published_flows(session, {d.flow_key for d in startable})
        history = await histories(
            session=session, patient_ids=sorted({d.patient.id for d in startable})
        )
        batch = _Batch()
        for due in rows:
            hold = _hold(due.patient, due.expires_at, busy, now)
            if hold is not None:
                result.count(hold.kind)
                batch.held.setdefault(tuple(hold.columns), []).append(
                    {"b_id": due.id, **{f"b_{k}": v for k, v in hold.columns.items()}}
                )
                if hold.kind == "missed":
                    batch.missed.append(due.patient.id)
                continue
            found = flows.get(due.flow_key)
            if found is None:
                # no published version (retired or never published): leave it leased and
                # let the one-by-one path log it; it ends as missed at its expiry
                result.failed += 1
                log.error(
                    "check-in %s names flow %r with no published version", due.id, due.flow_key
                )
                continue
            patient = due.patient
            try:
                # the engine first: it is pure, so a failure leaves the row untouched
                version, flow, checksum = found
                step = engine.start(
                    flow, context_for(patient, settings, history.get(patient.id, {})), now
                )
                columns = start_columns(
                    patient=patient,
                    version=version,
                    flow=flow,
                    checksum=checksum,
                    now=now,
                    expiry_after_s=due.expiry_after_s,
                    reminder_after_s=due.reminder_after_s,
                )
            except Exception:
                result.failed += 1
                log.exception("could not start check-in %s; retried after its lease", due.id)
                continue
            busy.add(patient.id)
            result.started += 1
            if not (step.state.active and all(isinstance(e, SendMessage) for e in step.events)):
                # ends at once, escalates, or records prefilled answers: the general path
                batch.slow.append((due, found, step))
                continue
            batch.begin.append(
                {
                    "b_id": due.id,
                    "b_version": version,
                    "b_checksum": checksum,
                    "b_at": now,
                    "b_expiry_s": columns["expiry_after_s"],
                    "b_reminder_s": columns["reminder_after_s"],
                    "b_reminder_at": columns["reminder_at"],
                    "b_expires_at": columns["expires_at"],
                    "b_state": step.state.to_json(),
                }
            )
            batch.messages.extend(
                message_row(
                    phone=patient.phone,
                    body=e.text,
                    purpose=str(e.purpose),
                    now=now,
                    patient_id=patient.id,
                    checkin_id=due.id,
                )
                for e in step.events
                if isinstance(e, SendMessage)
            )
        await batch.write(conn)
        outbound = await _finish_in_orm(session, settings, now, batch, result)
        await session.flush()
        ids_out = [m.id for m in outbound]
        if batch.messages:
            inserted = await conn.execute(_INSERT_MESSAGES, batch.messages)
            ids_out.extend(inserted.scalars().all())
        result.outbound_ids = ids_out
    return result


async def _finish_in_orm(
    session: AsyncSession, settings: Settings, now: datetime, batch: _Batch, result: TickResult
) -> list[Message]:
    """The rare rows that need the ORM: silence notes after a miss, and starts whose first
    step does more than send (answers, scores, escalations, an immediate end)."""
    for patient_id in batch.missed:
        patient = await session.get(Patient, patient_id)
        if patient is not None:
            await note_silence(session=session, patient=patient, now=now)
    outbound: list[Message] = []
    for due, (version, flow, checksum), step in batch.slow:
        checkin = await session.get(Checkin, due.id)
        patient = await session.get(Patient, due.patient.id)
        assert checkin is not None and patient is not None  # locked by this transaction
        begin(checkin, patient, version, flow, checksum, now)
        applied = await apply_step(
            session=session, checkin=checkin, patient=patient, step=step, settings=settings, now=now
        )
        outbound.extend(applied.outbound)
        result.started += len(applied.started)
    return outbound


@dataclass(frozen=True, slots=True)
class _Hold:
    """Why a claimed check-in does not start now, and the columns that settle it."""

    kind: str  # a TickResult counter: cancelled, missed, waiting or deferred
    columns: dict[str, Any]


def _hold(
    patient: PatientLike, expires_at: datetime | None, busy: set[int], now: datetime
) -> _Hold | None:
    """The decision both start paths share: None if the check-in may start now."""
    if not patient_can_receive(patient):
        outcome = "opted_out" if patient.opted_out_at else str(patient.status)
        return _Hold("cancelled", _ended(CheckinStatus.CANCELLED, outcome, now))
    if expires_at is not None and expires_at <= now:
        # Past its window (downtime, or waiting behind another conversation): never sent late.
        return _Hold("missed", _ended(CheckinStatus.MISSED, "missed", now))
    if patient.id in busy:
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
    busy: set[int],
    now: datetime,
    result: TickResult,
) -> bool:
    """``_hold`` on ORM rows (the one-by-one path); True if the check-in was settled."""
    hold = _hold(patient, checkin.expires_at, busy, now)
    if hold is None:
        return False
    result.count(hold.kind)
    for name, value in hold.columns.items():
        setattr(checkin, name, value)
    if hold.kind == "missed":
        await note_silence(session=session, patient=patient, now=now)
    return True


async def _start_each(
    db: Database, settings: Settings, now: datetime, ids: list[int]
) -> TickResult:
    """The careful path: one savepoint per row."""
    result = TickResult()
    async with db.write() as session:
        conn = await session.connection()
        # patients first, then their check-ins (see _PATIENTS_OF)
        busy = await _lock_busy(conn, await _patients_of(conn, ids), sqlite=db.is_sqlite)
        rows = await _claimed_rows(session, ids)
        outbound = []
        for checkin, patient in rows:
            # read before the savepoint: a rolled-back savepoint expires the row, and loading
            # it again from the except clause would need IO outside the greenlet
            checkin_id = checkin.id
            try:
                async with session.begin_nested():
                    applied = await _start_one(
                        session, settings, checkin, patient, busy, now, result
                    )
                    if applied is not None:
                        outbound.extend(applied.outbound)
            except Exception:
                result.failed += 1
                log.exception("could not start check-in %s; retried after its lease", checkin_id)
        await session.flush()
        result.outbound_ids = [m.id for m in outbound]
    return result


async def _start_one(
    session: AsyncSession,
    settings: Settings,
    checkin: Checkin,
    patient: Patient,
    busy: set[int],
    now: datetime,
    result: TickResult,
) -> Applied | None:
    if await _triage(session, checkin, patient, busy, now, result):
        return None
    applied = await start_checkin(
        session=session, checkin=checkin, patient=patient, settings=settings, now=now
    )
    busy.add(patient.id)
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
        outbound = []
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
                    outbound.extend(applied.outbound)
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
        result.outbound_ids = [m.id for m in outbound]
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
        outbound = []
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
                    outbound.extend(applied.outbound)
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
        result.outbound_ids = [m.id for m in outbound]
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
        session=session, patient_id=patient.id, reason="not_responding"
    ):
        return
    raise_escalation(
        session=session,
        severity=Severity.MODERATE,
        reason="not_responding",
        summary=f"The last {MISSED_STREAK} check-ins expired or were missed without an answer.",
        now=now,
        patient_id=patient.id,
    )
