"""SQLite contention: web and worker processes on one file; webhook rate and latency.

Runs case 6 of the reliability suite (``tests/reliability/contention_run.py``: ``python -m
bot serve`` and ``python -m bot worker`` on one SQLite file, the worker starting check-ins
falling due over the run while 8 concurrent senders post every talker's reply, every
texted patient's answer and delivery callbacks) on a fresh, migrated SQLite file, and
prints what ``tests/reliability/test_sqlite_contention.py`` no longer measures or asserts
because it depends on the machine:

- how long the fixed amount of work took, and webhooks/s, overall and per kind;
- the webhooks' latency (p50 / p99 / max) overall and per kind: the slowest against the
  client timeout is what the old test asserted, a lock wait shows here as a slow request;
- "database is locked" and ERROR records in both logs, the statuses, the check-ins the
  worker started; exit status 1 if any request failed or anything was locked.

    .venv/bin/python bench/sqlite_contention.py [--due 600] [--spread 14]

Loopback only; everything lives in a temporary directory. About 30 s with the defaults
(the test's CI size; ``--due 1500 --spread 54`` is its full size, about 70 s).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's queue module for scripts run from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.migrations import upgrade_async  # noqa: E402
from tests.reliability.contention_run import ContentionRun, run_contention  # noqa: E402

KINDS = ("reply", "started", "status")


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )


def report(run: ContentionRun, due: int) -> bool:
    """Print the figures; True when every request was a 200 and nothing was locked."""
    seconds = run.load_ended - run.load_started
    statuses = Counter(r.status for r in run.requests)
    total = len(run.requests)
    print(
        f"{total} webhooks in {seconds:.1f} s: {total / seconds:.0f}/s; HTTP {dict(statuses)}; "
        f"{_ms([r.seconds for r in run.requests])}"
    )
    for kind in KINDS:
        mine = [r for r in run.requests if r.kind == kind]
        print(
            f"  {kind:<8} {len(mine):>5} ({len(mine) / seconds:.0f}/s); "
            f"{_ms([r.seconds for r in mine])}"
        )
    locked = {name: text.lower().count("database is locked") for name, text in run.logs.items()}
    errors = {name: text.count('"level": "ERROR"') for name, text in run.logs.items()}
    print(
        f"worker started {run.started}/{due} check-ins; 'database is locked': {locked}; "
        f"ERROR records: {errors}; exit codes {run.exit_codes}"
    )
    return (
        statuses == Counter({200: total})
        and not any(locked.values())
        and not any(errors.values())
        and run.started == due
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sqlite_contention_") as tmp:
        path = Path(tmp) / "shared.db"
        await upgrade_async(f"sqlite+aiosqlite:///{path}")
        run = await run_contention(
            path, Path(tmp), due=args.due, spread_s=args.spread, load_timeout_s=args.timeout
        )
        ok = report(run, args.due)
    print("all 200, nothing locked" if ok else "FAILED: see above")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--due", type=int, default=600, help="check-ins falling due (600)")
    parser.add_argument(
        "--spread", type=float, default=14.0, help="seconds they fall due over (14)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up on a hung run after (300 s)"
    )
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
