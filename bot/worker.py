"""The worker: APScheduler only ticks; every due time lives in the database (docs/architecture.md, decision 1).

Each tick is an async callable doing a bounded amount of work and returning a
count for the log. Ticks never overlap themselves (``max_instances=1``) and an
exception in one tick is logged and does not stop the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.logs import request_id
from bot.metrics import Metrics

log = logging.getLogger(__name__)

TickFn = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Tick:
    name: str
    interval_s: float
    run: TickFn


async def run_tick(tick: Tick, metrics: Metrics | None = None) -> int:
    started = time.perf_counter()
    token = request_id.set(f"tick-{tick.name}-{uuid.uuid4().hex[:8]}")
    try:
        count = await tick.run()
    except Exception:
        log.exception("tick %s failed", tick.name)
        return 0
    finally:
        request_id.reset(token)
        if metrics is not None:
            metrics.tick_seconds.labels(tick.name).observe(time.perf_counter() - started)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if count:
        log.info("tick %s handled %d rows in %.1f ms", tick.name, count, elapsed_ms)
    return count


class Worker:
    """Owns one AsyncIOScheduler running the given ticks."""

    def __init__(self, ticks: list[Tick], metrics: Metrics | None = None) -> None:
        self.ticks = ticks
        self.metrics = metrics
        self._scheduler = AsyncIOScheduler(timezone="UTC")

    def start(self) -> None:
        now = datetime.now(UTC)
        for tick in self.ticks:
            self._scheduler.add_job(
                run_tick,
                "interval",
                args=[tick, self.metrics],
                seconds=tick.interval_s,
                id=tick.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=now,
            )
        self._scheduler.start()
        log.info("worker started with ticks: %s", ", ".join(t.name for t in self.ticks) or "none")

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
        log.info("worker stopped")
