"""The worker's check-in jobs: start due check-ins, send reminders, expire, notice silence.

Every job claims a bounded batch in one statement (``FOR UPDATE SKIP LOCKED``
on PostgreSQL; the single writer on SQLite) and handles each row inside a
savepoint, so one bad row is logged and retried later without stopping the
others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.conversations import Applied, resume_checkin, start_checkin
from bot.services.escalations import open_escalation_exists, raise_escalation
from bot.services.scheduling import patient_can_receive, quiet_hours, quiet_now, zone
from bot.settings import Settings
from db.enums import CheckinStatus, PatientStatus, Severity
from db.models import Checkin, Patient
from db.session import Database
from flows.engine import Expired, ReminderDue
from flows.schedule import defer_for_quiet_hours

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
BUSY_RECHECK = timedelta(minutes=5)
MISSED_STREAK = 2


@dataclass(slots=True)
class TickResult:
    started: int = 0
    missed: int = 0
    deferred: int = 0
    waiting: int = 0
    cancelled: int = 0
    reminded: int = 0
    expired: int = 0
    failed: int = 0
    outbound_ids: list[int] = field(default_factory=list)

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
    """Lease up to ``limit`` due check-ins; a crashed worker's lease runs out and they return."""
    async with db.write() as session:
        query = (
            select(Checkin.id)
            .where(
                Checkin.status == CheckinStatus.SCHEDULED,
                Checkin.due_at <= now,
                or_(Checkin.lease_until.is_(None), Checkin.lease_until < now),
            )
            .order_by(Checkin.due_at, Checkin.id)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        ids = list((await session.scalars(query)).all())
        if ids:
            await session.execute(
                update(Checkin).where(Checkin.id.in_(ids)).values(lease_until=now + LEASE)
            )
    return ids


async def start_due(
    db: Database, settings: Settings, now: datetime, *, limit: int = 500
) -> TickResult:
    result = TickResult()
    ids = await claim_due(db, now, limit)
    if not ids:
        return result
    async with db.write() as session:
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
        patient_ids = {p.id for _c, p in rows}
        busy = set(
            (
                await session.scalars(
                    select(Checkin.patient_id).where(
                        Checkin.patient_id.in_(patient_ids),
                        Checkin.status == CheckinStatus.ACTIVE,
                    )
                )
            ).all()
        )
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
    if not patient_can_receive(patient):
        checkin.status = CheckinStatus.CANCELLED
        checkin.outcome = "opted_out" if patient.opted_out_at else str(patient.status)
        checkin.completed_at = now
        checkin.lease_until = None
        result.cancelled += 1
        return None
    if checkin.expires_at is not None and checkin.expires_at <= now:
        # Past its window (downtime, or waiting behind another conversation): never sent late.
        checkin.status = CheckinStatus.MISSED
        checkin.outcome = "missed"
        checkin.completed_at = now
        checkin.lease_until = None
        result.missed += 1
        await note_silence(session=session, patient=patient, now=now)
        return None
    if patient.id in busy:
        checkin.lease_until = now + BUSY_RECHECK
        result.waiting += 1
        return None
    if quiet_now(patient, now):
        checkin.due_at = defer_for_quiet_hours(now, zone(patient), quiet_hours(patient))
        checkin.lease_until = None
        result.deferred += 1
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
            except Exception:
                result.failed += 1
                log.exception("reminder for check-in %s failed", checkin_id)
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
            except Exception:
                result.failed += 1
                log.exception("expiring check-in %s failed", checkin_id)
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
