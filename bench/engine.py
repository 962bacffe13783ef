"""Engine throughput: steps/s and per-step p50/p99 on one core.

A step is one ``start`` or ``resume`` call. The mix is PHQ-9 and GAD-7
conversations from the shipped library, answered with numbers, labels and
number words, with about 10% unparseable replies (re-asked). Run:

    .venv/bin/python bench/engine.py [--conversations N]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's queue module for scripts run from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from bot.library import flow_sources  # noqa: E402
from flows.definition import load_flow  # noqa: E402
from flows.engine import Context, Reply, resume, start  # noqa: E402
from flows.model import Flow  # noqa: E402

GOOD = ["0", "1", "2", "3", "2.", "#1", "several days", "Nearly every day!", "zero", "two 👍"]
BAD = ["maybe", "2 or 3", "7", "idk", "what?"]


def _replies(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(BAD) if rng.random() < 0.10 else rng.choice(GOOD) for _ in range(n)]


def run(flows: list[Flow], conversations: int, seed: int = 7) -> list[int]:
    """Run ``conversations`` conversations; return each step's duration in nanoseconds."""
    rng = random.Random(seed)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    ctx = Context("Ana", clinic_name="Lakeside Psychiatry", clinic_phone="+15550100")
    scripts = [(rng.choice(flows), _replies(rng, 40)) for _ in range(conversations)]
    timings: list[int] = []
    clock = time.perf_counter_ns
    for flow, script in scripts:
        t0 = clock()
        step = start(flow, ctx, now)
        timings.append(clock() - t0)
        for text in script:
            if not step.state.active:
                break
            t0 = clock()
            step = resume(flow, step.state, Reply(text), now)
            timings.append(clock() - t0)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=20_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sources = flow_sources()
    flows = [load_flow(sources["phq9"]), load_flow(sources["gad7"])]
    run(flows, 500)  # warm caches (parsers, templates) as a long-running worker would
    gc.collect()
    wall0 = time.perf_counter()
    timings = run(flows, args.conversations)
    wall = time.perf_counter() - wall0
    timings.sort()
    steps = len(timings)
    p50 = timings[steps // 2] / 1000
    p99 = timings[int(steps * 0.99)] / 1000
    print(f"conversations: {args.conversations}  steps: {steps}")
    print(f"throughput: {steps / wall:,.0f} steps/s (wall, incl. harness)")
    print(f"engine only: {steps / (sum(timings) / 1e9):,.0f} steps/s")
    print(
        f"per step: p50 {p50:.1f} µs  p99 {p99:.1f} µs  mean {statistics.fmean(timings) / 1000:.1f} µs"
    )


if __name__ == "__main__":
    main()
