"""A worker process for the multi-worker tests: loops ``dispatch.start_due`` + ``outbox.send``.

Run as ``python -m tests.integration.worker_proc --url ... --run-dir ... --name w1``. It
writes ``<name>.ready`` once connected, waits for ``go`` in the run directory, and then works
until nothing is left to do (no scheduled check-in, no unsent message) or ``--seconds`` pass.
Each accepted send is appended to ``<name>.sent`` (one phone number a line) by a transport
that stands in for Twilio; ``--claimed-log`` appends every claimed check-in id after the claim
committed; ``--slow`` sleeps that long inside the start transaction for each row, so a test
can kill the process while it holds a batch. ``--lease`` shortens ``dispatch.LEASE`` in this
process only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from bot.clock import SystemClock
from bot.services import dispatch, outbox
from bot.settings import load_settings
from bot.sms.transport import SendResult
from db.enums import CheckinStatus, Direction, MessageStatus
from db.models import Checkin, Message
from db.session import Database


class LogTransport:
    """Accepts every message and appends its recipient to a file, with a process-unique SID."""

    name = "log"

    def __init__(self, path: Path, prefix: str) -> None:
        self._path = path
        self._prefix = prefix
        self._count = 0

    async def send(self, *, to: str, body: str) -> SendResult:
        self._count += 1
        with self._path.open("a", encoding="utf-8") as f:
            f.write(to + "\n")
        return SendResult(sid=f"LG{self._prefix}x{self._count}", status="sent")

    async def close(self) -> None:
        return None


async def _work_left(db: Database) -> bool:
    async with db.read() as s:
        scheduled = await s.scalar(
            select(func.count()).where(Checkin.status == CheckinStatus.SCHEDULED)
        )
        unsent = await s.scalar(
            select(func.count()).where(
                Message.direction == Direction.OUT,
                or_(
                    Message.status == MessageStatus.PENDING,
                    Message.status == MessageStatus.SENDING,
                ),
            )
        )
    return bool(scheduled or unsent)


def _instrument(claimed_log: Path | None, slow: float) -> None:
    if claimed_log is not None:
        claim = dispatch.claim_due

        async def logged_claim(db: Database, now: datetime, limit: int) -> list[int]:
            ids = await claim(db, now, limit)
            if ids:
                with claimed_log.open("a", encoding="utf-8") as f:
                    f.write("".join(f"{i}\n" for i in ids))
            return ids

        dispatch.claim_due = logged_claim
    if slow > 0:
        start_one = dispatch._start_one

        async def slow_start(*args: Any) -> Any:
            await asyncio.sleep(slow)
            return await start_one(*args)

        dispatch._start_one = slow_start  # type: ignore[assignment]
        prefetch = dispatch.histories  # type: ignore[attr-defined]

        async def slow_histories(*, session: Any, patient_ids: list[int]) -> Any:
            # the batch path: hold its start transaction as long as the row-by-row one would
            await asyncio.sleep(slow * len(patient_ids))
            return await prefetch(session=session, patient_ids=patient_ids)

        dispatch.histories = slow_histories  # type: ignore[attr-defined]


async def run(args: argparse.Namespace) -> int:
    dispatch.LEASE = timedelta(seconds=args.lease)
    _instrument(Path(args.claimed_log) if args.claimed_log else None, args.slow)
    run_dir = Path(args.run_dir)
    settings = load_settings(
        {"DATABASE_URL": args.url, "CLINIC_NAME": "Test Clinic", "CLINIC_PHONE": "+12025550100"},
        require_secret=False,
    )
    db = Database(args.url, pool_size=2, max_overflow=2)
    transport = LogTransport(run_dir / f"{args.name}.sent", f"{args.name}p{os.getpid()}")
    clock = SystemClock()
    try:
        await db.ping()
        (run_dir / f"{args.name}.ready").touch()
        deadline = time.monotonic() + args.seconds
        while not (run_dir / "go").exists():
            if time.monotonic() > deadline:
                return 3
            await asyncio.sleep(0.02)
        while time.monotonic() < deadline:
            result = await dispatch.start_due(db, settings, clock.now(), limit=args.batch)
            sent = await outbox.send(db, transport, clock, limit=200)
            if result.handled or result.failed or sent:
                continue
            if not await _work_left(db):
                return 0
            await asyncio.sleep(0.05)
        return 2
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--lease", type=float, default=120.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--claimed-log", default="")
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
