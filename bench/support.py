"""What the benchmark scripts share: a scratch PostgreSQL database and a process's CPU time.

Imported as ``bench.support`` by scripts that put the repository root on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

ADMIN_PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""Used only to create and drop the scratch databases (loopback by default)."""


@contextlib.asynccontextmanager
async def scratch_database(prefix: str, *, keep: bool = False) -> AsyncIterator[str]:
    """A fresh, empty database ``<prefix>_<pid>`` as a SQLAlchemy asyncpg URL; dropped at the
    end (also on an error) unless ``keep``."""
    import asyncpg

    name = f"{prefix}_{os.getpid()}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(ADMIN_PG_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{name}"')
    base = ADMIN_PG_URL.split("://", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql+asyncpg://{base}/{name}"
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {url}")
        else:
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (Linux /proc), for CPU per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (Linux /proc/stat): with a run's start and
    end, how much of the machine a run used, whoever used it (the database included)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
