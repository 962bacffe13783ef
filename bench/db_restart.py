"""Database restart under webhook load: how long the outage and the recovery take.

Runs case 3 of the reliability suite (``tests/reliability/db_restart_run.py``: the real
server, signed replies from 6 concurrent senders, the local PostgreSQL cluster stopped with
``pg_ctlcluster ... stop`` and started again) on a fresh database, and prints what
``tests/reliability/test_db_restart.py`` no longer asserts because it depends on the
machine:

- the outage: how long ``pg_ctlcluster stop`` took, how long the cluster was held down,
  how long ``start`` took until ``pg_isready``, and the whole outage (stop command to
  ``pg_isready``; the old test asserted it under 5 s);
- the recovery: from the start command to the server's first 200 again (the old test
  asserted that within 10 s of ``pg_isready``), and how long webhooks were refused (first
  503 to first 200 after it);
- the latency of the webhooks in each phase (p50 / p99 / max), the slowest of all (the old
  test asserted each under 10 s) and the statuses;
- and whether the run kept the promises the test checks (200/503 only, recovered alone,
  each message recorded once); exit status 1 if not.

    .venv/bin/python bench/db_restart.py [--hold 1.0] [--runs 1] [--keep-logs]

``--hold``: keep the cluster down at least this many seconds after the stop returned (and
after the first 503s); the old test held it 1 s. Each phase sends a bounded number of
requests (``BUDGET`` in the run module: 100 while down), so a long hold idles the senders.

This STOPS THE SHARED LOCAL CLUSTER for a few seconds (other test runs against it see
connection errors meanwhile); it is always started again. Loopback only:
``BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) must point at
the local cluster; it is used to create and drop ``aftercare_dbrestart_<pid>``. One run
takes about 15-30 s.
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
from urllib.parse import urlsplit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import ADMIN_PG_URL, scratch_database  # noqa: E402
from bot.migrations import upgrade_async  # noqa: E402
from tests.reliability.db_restart_run import PHASES, Outcome, RestartRun, run_restart  # noqa: E402


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )


def report(run: RestartRun, hold_s: float) -> bool:
    """Print the figures of one run; True when it kept the test's promises."""
    m = run.marks
    stop_s = m["down"] - m["stopping"]
    held_s = m["starting"] - m["down"]
    start_s = m["after"] - m["starting"]
    outage_s = m["after"] - m["stopping"]
    statuses = Counter(o.status for o in run.outcomes)
    print(
        f"outage {outage_s:.2f} s (stop command to pg_isready): stop {stop_s:.2f} s, held down "
        f"{held_s:.2f} s (--hold {hold_s:g}), start command until pg_isready {start_s:.2f} s"
    )
    first_503 = min(
        (o.finished for o in run.in_phase("stopping", "down") if o.status == 503), default=None
    )
    back = min(
        (o.finished for o in run.in_phase("starting", "after") if o.status == 200), default=None
    )
    if back is None:
        print("the server never answered 200 again")
    else:
        print(f"first 200 {back - m['starting']:.2f} s after the start command", end="")
        if first_503 is not None:
            print(f"; webhooks refused for {back - first_503:.2f} s (first 503 to first 200)")
        else:
            print()
    print(
        f"{len(run.outcomes)} webhooks in {m['end'] - m['warmup']:.1f} s: {dict(statuses)}; "
        f"slowest {max(o.seconds for o in run.outcomes):.2f} s"
    )
    for phase in PHASES:
        outcomes: list[Outcome] = run.in_phase(phase)
        print(
            f"  {phase:<9} {len(outcomes):>4} requests {dict(Counter(o.status for o in outcomes))}; "
            f"{_ms([o.seconds for o in outcomes])}"
        )
    print(
        f"healthz: {run.health_down} while stopped, {run.health_after} after; retries of the "
        f"503s: {dict(run.retried)}"
    )
    refused = sum(1 for o in run.outcomes if o.status == 503)
    kept = (
        set(statuses) <= {200, 503}
        and run.same_process
        and run.retried == Counter({200: refused})
        and set(run.after_inbound) == {o.sid for o in run.outcomes}
        and set(run.after_inbound.values()) == {1}
    )
    print(
        "promises (200/503 only, recovered alone, each message once):", "kept" if kept else "BROKEN"
    )
    return kept


async def main_async(args: argparse.Namespace) -> int:
    host = urlsplit(ADMIN_PG_URL).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"BENCH_POSTGRES_URL must be the local cluster (it is stopped): {host}")
        return 2
    failures = 0
    for i in range(args.runs):
        if args.runs > 1:
            print(f"-- run {i + 1} of {args.runs}")
        async with scratch_database("aftercare_dbrestart") as url:
            await upgrade_async(url)
            with tempfile.TemporaryDirectory(prefix="db_restart_") as tmp:
                run = await run_restart(url, Path(tmp), hold_s=args.hold)
                if not report(run, args.hold):
                    failures += 1
                    if args.keep_logs:
                        kept = Path(tempfile.mkdtemp(prefix="db_restart_log_"))
                        (kept / "server.log").write_text(run.server_log)
                        print(f"server log kept in {kept}")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--hold", type=float, default=1.0, help="seconds held down (default 1)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true", help="keep the server log on failure")
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
