"""Dispatch throughput: how fast workers start due check-ins and queue their first message.

Seeds N due check-ins (one patient each, no quiet hours, a PHQ-9 or a daily
mood check) into a fresh database, then runs worker processes that do
nothing but the dispatch tick (``bot.services.dispatch.start_due``) until no
check-in is due, and prints check-ins/s and each worker's peak memory. The
outbox is not sent: this measures starting conversations. It then checks the
database: every check-in started exactly once, one first message each.

    .venv/bin/python bench/dispatch.py [--rows 100000] [--sqlite-rows 20000]
        [--workers 1,2] [--backend postgres|sqlite|both] [--batch 500] [--lanes 2]

PostgreSQL: ``BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) is used only to create and drop
``aftercare_dispatch_<pid>``. Loopback only; everything is cleaned up.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's queue module for scripts run from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import AsyncIterator, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from sqlalchemy import func, insert, select  # noqa: E402

SELF = Path(__file__).resolve()
ROOT = SELF.parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import cpu_seconds, machine_busy_seconds, scratch_database  # noqa: E402
from bot.migrations import upgrade  # noqa: E402
from bot.services.library_seed import seed_library  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.ticks import DISPATCH_LANES, dispatch_batch  # noqa: E402
from db.enums import CheckinStatus, Direction, PatientStatus  # noqa: E402
from db.models import Checkin, Message, Patient  # noqa: E402
from db.session import Database  # noqa: E402

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SEED_CHUNK = 5_000


async def seed(url: str, rows: int) -> float:
    started = time.perf_counter()
    db = Database(url)
    try:
        async with db.write() as s:
            await seed_library(session=s, now=NOW - timedelta(days=1))
        for first in range(0, rows, SEED_CHUNK):
            count = min(SEED_CHUNK, rows - first)
            async with db.write() as s:
                ids = (
                    await s.scalars(
                        insert(Patient).returning(Patient.id),
                        [
                            {
                                "first_name": f"P{i}",
                                "phone": f"+1202{i:07d}",
                                "timezone": "UTC",
                                "language": "en",
                                "quiet_start": None,
                                "quiet_end": None,
                                "status": PatientStatus.ACTIVE,
                                "created_at": NOW,
                                "updated_at": NOW,
                            }
                            for i in range(first, first + count)
                        ],
                    )
                ).all()
                await s.execute(
                    insert(Checkin),
                    [
                        {
                            "patient_id": pid,
                            "flow_key": "phq9" if n % 2 else "daily_mood",
                            "status": CheckinStatus.SCHEDULED,
                            "due_at": NOW - timedelta(minutes=5),
                            "reminder_after_s": 4 * 3600,
                            "expiry_after_s": 24 * 3600,
                            "expires_at": NOW + timedelta(hours=24),
                            "created_at": NOW - timedelta(days=1),
                        }
                        for n, pid in enumerate(ids)
                    ],
                )
    finally:
        await db.dispose()
    return time.perf_counter() - started


def worker_main(url: str, batch: int, lanes: int) -> None:
    """One worker process: the dispatch tick's drain loop (``dispatch.drain_due``, as
    ``aftercare worker`` runs it, minus sending) back to back until nothing is due."""
    from bot.services import dispatch

    async def run() -> None:
        settings = load_settings(
            {"DATABASE_URL": url, "CLINIC_NAME": "Bench Clinic"}, require_secret=False
        )
        db = Database(url)
        started = 0

        async def count(result: dispatch.TickResult) -> None:
            nonlocal started
            started += result.started

        try:
            idle = 0
            while idle < 3:
                before = started
                await dispatch.drain_due(
                    db,
                    settings,
                    lambda: NOW,
                    limit=batch,
                    lanes=lanes,
                    budget_s=3600,
                    after_batch=count,
                )
                idle = idle + 1 if started == before else 0
                if started == before:
                    await asyncio.sleep(0.05)
        finally:
            await db.dispose()
        print(f"started {started}", flush=True)

    asyncio.run(run())


def peak_rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@dataclass(slots=True)
class WorkerRun:
    elapsed_s: float
    peaks_kib: list[int]
    outputs: list[str]
    worker_cpu_s: float  # the workers' own CPU
    machine_cpu_s: float  # every core's busy time meanwhile (workers, PostgreSQL, the rest)


def run_workers(url: str, workers: int, batch: int, lanes: int) -> WorkerRun:
    """Start the workers together; wall time until all exit, their peak RSS, output and CPU."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    busy_before = machine_busy_seconds()
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SELF),
                "--worker",
                url,
                "--batch",
                str(batch),
                "--lanes",
                str(lanes),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(workers)
    ]
    peaks = [0] * workers
    cpu = [0.0] * workers  # the last reading before each exits (a worker's last ~20 ms lost)
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                if p.poll() is None:
                    peaks[i] = max(peaks[i], peak_rss_kib(p.pid))
                    cpu[i] = cpu_seconds(p.pid) or cpu[i]
            time.sleep(0.02)
            if time.perf_counter() - started > 900:
                raise TimeoutError("workers did not finish within 15 minutes")
        elapsed = time.perf_counter() - started
        busy = machine_busy_seconds() - busy_before
        outputs = [p.stdout.read() if p.stdout else "" for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return WorkerRun(elapsed, peaks, outputs, sum(cpu), busy)


async def verify(url: str, rows: int) -> list[str]:
    db = Database(url)
    problems: list[str] = []
    try:
        async with db.read() as s:
            active = await s.scalar(
                select(func.count())
                .select_from(Checkin)
                .where(Checkin.status == CheckinStatus.ACTIVE)
            )
            per = (
                await s.execute(
                    select(Message.checkin_id, func.count())
                    .where(Message.direction == Direction.OUT, Message.purpose == "question")
                    .group_by(Message.checkin_id)
                )
            ).all()
    finally:
        await db.dispose()
    if active != rows:
        problems.append(f"{active} of {rows} check-ins active")
    if len(per) != rows or any(n != 1 for _c, n in per):
        problems.append(
            f"first questions: {len(per)} check-ins with one, others with {set(n for _c, n in per)}"
        )
    return problems


@contextlib.asynccontextmanager
async def sqlite_db() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="aftercare-dispatch-") as tmp:
        yield f"sqlite+aiosqlite:///{tmp}/bench.db"


async def one_run(backend: str, rows: int, workers: int, batch: int, lanes: int) -> str:
    ctx = scratch_database("aftercare_dispatch") if backend == "postgres" else sqlite_db()
    async with ctx as url:
        await asyncio.to_thread(upgrade, url)
        seed_s = await seed(url, rows)
        run = await asyncio.to_thread(run_workers, url, workers, batch, lanes)
        problems = await verify(url, rows)
    shares = ", ".join(o.strip().splitlines()[-1] if o.strip() else "?" for o in run.outputs)
    peak = ", ".join(f"{p / 1024:.0f} MiB" for p in run.peaks_kib)
    status = "OK" if not problems else "PROBLEMS: " + "; ".join(problems)
    cores = os.cpu_count() or 1
    return (
        f"{backend:<8} rows {rows:>7}  workers {workers}  {rows / run.elapsed_s:>8,.0f} check-ins/s  "
        f"({run.elapsed_s:.1f} s; seeded in {seed_s:.1f} s)  peak RSS {peak}  [{shares}]  "
        f"check {status}\n"
        f"         CPU per check-in: workers {run.worker_cpu_s / rows * 1e6:.0f} µs, whole machine "
        f"{run.machine_cpu_s / rows * 1e6:.0f} µs; machine busy "
        f"{run.machine_cpu_s / run.elapsed_s / cores:.0%} of {cores} cores"
    )


async def main_async(args: argparse.Namespace) -> int:
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(
        f"dispatch benchmark: batch {args.batch or 'as the worker'}, lanes {args.lanes}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    with contextlib.suppress(OSError):
        print(
            "load average at start:", " ".join(os.getloadavg().__repr__().strip("()").split(", "))
        )
    lines = []
    pg_batch = args.batch or dispatch_batch(sqlite=False)
    if args.backend in ("postgres", "both"):
        for w in worker_counts:
            line = await one_run("postgres", args.rows, w, pg_batch, args.lanes)
            print(line, flush=True)
            lines.append(line)
        if args.memory_check:
            line = await one_run("postgres", max(args.rows // 10, 1000), 1, pg_batch, args.lanes)
            print(line + "  (memory check: a tenth of the rows)", flush=True)
    if args.backend in ("sqlite", "both"):
        line = await one_run(
            "sqlite", args.sqlite_rows, 1, args.batch or dispatch_batch(sqlite=True), args.lanes
        )
        print(line, flush=True)
        lines.append(line)
    return 0 if all("check OK" in ln for ln in lines) else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=100_000, help="due check-ins on PostgreSQL")
    p.add_argument("--sqlite-rows", type=int, default=20_000)
    p.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    p.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="check-ins per batch (default: the worker's, 1000 on PostgreSQL, 500 on SQLite)",
    )
    p.add_argument(
        "--lanes",
        type=int,
        default=DISPATCH_LANES,
        help="batches in flight per worker on PostgreSQL (the worker's setting)",
    )
    p.add_argument("--memory-check", action="store_true", help="also run a tenth of the rows")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.batch, args.lanes)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
