"""How fast is this machine at what the service spends its time on?

The other benchmarks' figures move with the machine (and its neighbours) far more than
with small code changes. This prints three calibration figures to record next to them:

- pure Python: a fixed loop of dict and string work (what the engine and the ORM do),
- one PostgreSQL round trip with asyncpg (``SELECT 1``): wall and client CPU, over TCP and
  over the Unix socket when there is one (each SQL statement of a request pays this),
- the system-call cost under that round trip (send + poll), which a virtual machine can
  make several times dearer than bare metal.

    .venv/bin/python bench/machine.py

PostgreSQL: ``BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
loopback only. Nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's queue module for scripts run from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import asyncio  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import asyncpg  # noqa: E402

PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SOCKET_DIR = "/var/run/postgresql"
ROUND_TRIPS = 3000


def python_ops_per_s(seconds: float = 1.0) -> float:
    """Iterations per second of a small dict/str workload, best of three."""
    best = 0.0
    for _ in range(3):
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            for i in range(1000):
                d: dict[str, str | int] = {"key": i, "text": f"q{i}", "value": i * 2}
                text, value = str(d["text"]), int(d["value"])
                if text.startswith("q") and value > i:
                    n += 1
        best = max(best, n / (time.perf_counter() - started))
    return best


async def round_trip(dsn: str) -> tuple[float, float]:
    """Mean wall and client CPU (µs) of ``SELECT 1`` over one connection."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for _ in range(200):
            await conn.fetchval("SELECT 1")
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(ROUND_TRIPS):
            await conn.fetchval("SELECT 1")
        return (
            (time.perf_counter() - wall) / ROUND_TRIPS * 1e6,
            (time.process_time() - cpu) / ROUND_TRIPS * 1e6,
        )
    finally:
        await conn.close()


async def main() -> int:
    has_socket = Path(SOCKET_DIR).is_dir()  # noqa: ASYNC240 (before any I/O runs)
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python: {python_ops_per_s():,.0f} small dict/str iterations/s")
    parts = urlsplit(PG_URL)
    try:
        wall, cpu = await round_trip(PG_URL)
        print(
            f"postgres over TCP ({parts.hostname}): SELECT 1 {wall:.0f} µs wall, {cpu:.0f} µs CPU"
        )
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"postgres over TCP: unavailable ({type(exc).__name__})")
        return 1
    if has_socket:
        local = f"postgresql://{parts.username or 'postgres'}@/{parts.path.lstrip('/')}"
        try:
            wall, cpu = await round_trip(f"{local}?host={SOCKET_DIR}")
            print(f"postgres over the Unix socket: SELECT 1 {wall:.0f} µs wall, {cpu:.0f} µs CPU")
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"postgres over the Unix socket: unavailable ({type(exc).__name__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
