"""The worker's ticks, built from the app's resources.

Each tick claims a bounded batch of due rows, commits, then sends what it
queued through the outbox at once (the worker's own fast path).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import select

from bot.appkeys import CLOCK, DATABASE, SETTINGS, TRANSPORT
from bot.services import dispatch, outbox, paging
from bot.services.scheduling import replenish
from bot.worker import Tick
from db.enums import EnrollmentStatus
from db.models import Enrollment, Patient

log = logging.getLogger(__name__)

OUTBOX_INTERVAL_S = 2.0
DISPATCH_INTERVAL_S = 5.0
REMINDER_INTERVAL_S = 30.0
EXPIRY_INTERVAL_S = 30.0
REPLENISH_INTERVAL_S = 300.0
PAGING_INTERVAL_S = 10.0
EARLY_STATUS_INTERVAL_S = 10.0
BATCH = 500
DISPATCH_BUDGET_S = 4.0
"""How long one dispatch tick keeps taking full batches (a backlog after downtime, a
morning's check-ins all due at 09:00) before it lets the next tick continue."""
DISPATCH_LANES = 2
"""Batches one worker runs at once on PostgreSQL (one waits for the database, one computes)."""
DISPATCH_BATCH_POSTGRES = 1000
"""Check-ins one dispatch batch starts on PostgreSQL: a batch's round trips cost the same for
500 rows as for 1,000 (about 10% more check-ins/s at 1,000). Replies from the batch's
patients wait for it (a few hundred ms at most). SQLite keeps ``BATCH``: there a batch holds
the single write lock, which every webhook waits for."""


def dispatch_batch(*, sqlite: bool) -> int:
    return BATCH if sqlite else DISPATCH_BATCH_POSTGRES


REPLENISH_BATCH = 200


def build_ticks(app: web.Application) -> list[Tick]:
    """Every periodic job of the worker; each claims a bounded batch of due rows."""
    db, transport, clock, settings = app[DATABASE], app[TRANSPORT], app[CLOCK], app[SETTINGS]
    # sends in flight at once, across all of this worker's ticks and dispatch lanes: also the
    # most duplicates one crash of this worker can cause
    concurrency = asyncio.Semaphore(settings.outbox_concurrency)

    async def send_queued(ids: list[int]) -> None:
        if ids:
            await outbox.send(db, transport, clock, ids=ids, concurrency=concurrency)

    async def send_outbox() -> int:
        return await outbox.send(db, transport, clock, limit=BATCH, concurrency=concurrency)

    async def after_dispatch(result: dispatch.TickResult) -> None:
        await send_queued(result.outbound_ids)
        if result.handled or result.failed:
            log.info(
                "dispatch: started %d, deferred %d, waiting %d, held %d, missed %d, cancelled %d,"
                " failed %d",
                result.started,
                result.deferred,
                result.waiting,
                result.held,
                result.missed,
                result.cancelled,
                result.failed,
            )

    async def start_due() -> int:
        return await dispatch.drain_due(
            db,
            settings,
            clock.now,
            limit=dispatch_batch(sqlite=db.is_sqlite),
            lanes=DISPATCH_LANES,
            budget_s=DISPATCH_BUDGET_S,
            after_batch=after_dispatch,
        )

    async def remind() -> int:
        result = await dispatch.remind_due(db, settings, clock.now(), limit=BATCH)
        await send_queued(result.outbound_ids)
        return result.handled

    async def expire() -> int:
        result = await dispatch.expire_due(db, settings, clock.now(), limit=BATCH)
        await send_queued(result.outbound_ids)
        return result.handled

    async def page() -> int:
        paged, ids = await paging.page_due(db, settings, clock.now())
        await send_queued(ids)
        return paged

    async def early_statuses() -> int:
        return await outbox.apply_early_statuses(db, clock.now())

    cursor = {"after": 0}

    async def top_up() -> int:
        """Walk the active enrollments a batch at a time, keeping recurring check-ins ahead."""
        created = 0
        async with db.write() as session:
            rows = (
                await session.execute(
                    select(Enrollment, Patient)
                    .join(Patient, Patient.id == Enrollment.patient_id)
                    .where(
                        Enrollment.status == EnrollmentStatus.ACTIVE,
                        Enrollment.id > cursor["after"],
                    )
                    .order_by(Enrollment.id)
                    .limit(REPLENISH_BATCH)
                )
            ).all()
            last_id = rows[-1][0].id if rows else 0
            for enrollment, patient in rows:
                enrollment_id = enrollment.id  # a rolled-back savepoint may expire the row
                try:
                    async with session.begin_nested():
                        created += len(
                            await replenish(
                                session=session,
                                enrollment=enrollment,
                                patient=patient,
                                now=clock.now(),
                            )
                        )
                except Exception:
                    log.exception("replenishing enrollment %s failed", enrollment_id)
            cursor["after"] = last_id if len(rows) == REPLENISH_BATCH else 0
        return created

    return [
        Tick("outbox", OUTBOX_INTERVAL_S, send_outbox),
        Tick("dispatch", DISPATCH_INTERVAL_S, start_due),
        Tick("reminders", REMINDER_INTERVAL_S, remind),
        Tick("expiry", EXPIRY_INTERVAL_S, expire),
        Tick("replenish", REPLENISH_INTERVAL_S, top_up),
        Tick("paging", PAGING_INTERVAL_S, page),
        Tick("statuses", EARLY_STATUS_INTERVAL_S, early_statuses),
    ]
