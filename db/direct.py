"""The drivers' own connections, for the one path where SQLAlchemy's per-statement cost
outweighed everything else: a reply inside a running conversation
(``bot.services.direct_reply``).

PostgreSQL: a small asyncpg pool built from the engine's own connect arguments, so it
reaches the same server, database and options as the engine. SQLite: one ``sqlite3``
connection used on the event loop's thread, with a busy timeout of zero: a transaction
that would wait for another process's writer is given up at once (the caller falls back
to the ORM path, which waits in a thread) instead of blocking the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

# enough for concurrency 16 on one process (each reply holds a connection for two round
# trips); more requests wait for a connection, they never fail for want of one
PG_POOL_SIZE = 8
# asyncpg options that SQLAlchemy's dialect takes for itself
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """No reset query when a connection goes back to the pool (a round trip per use): the
    direct path runs single statements in autocommit and never changes session state."""


class PgDirect:
    """A lazily created asyncpg pool; ``close`` ends it with the engine."""

    def __init__(self, engine: AsyncEngine, connect_args: dict[str, Any] | None = None) -> None:
        _args, kwargs = engine.dialect.create_connect_args(engine.url)
        cache = kwargs.pop("prepared_statement_cache_size", None)
        for name in _DIALECT_ONLY:
            kwargs.pop(name, None)
        if cache is not None:
            kwargs["statement_cache_size"] = cache
        kwargs.update(connect_args or {})
        self._kwargs: dict[str, Any] = dict(kwargs)
        self._pool: asyncpg.Pool | None = None
        self._creating: asyncio.Lock | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._creating is None:
            self._creating = asyncio.Lock()
        async with self._creating:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    min_size=1, max_size=PG_POOL_SIZE, reset=_keep_session, **self._kwargs
                )
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL; None for an in-memory database (another connection
    would see a different one)."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return database


class SqliteDirect:
    """One ``sqlite3`` connection with the engine's pragmas, but no busy wait."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
