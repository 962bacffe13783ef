"""The drivers' own connections, for the one path where SQLAlchemy's per-statement cost
outweighed everything else: a reply inside a running conversation
(``bot.services.direct_reply``).

PostgreSQL: a small asyncpg pool built from the engine's own connect arguments, so it
reaches the same server, database and options as the engine. SQLite: one ``sqlite3``
connection used on the event loop's thread, with group commit and a busy timeout of
zero: a transaction that would wait for another process's writer is given up at once
(the caller falls back to the ORM path, which waits in a thread) instead of blocking the
loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

# enough for concurrency 16 on one process (each reply holds a connection for two round
# trips); more requests wait for a connection, they never fail for want of one
PG_POOL_SIZE = 8
log = logging.getLogger(__name__)
T = TypeVar("T")
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
        # the write's plan is the same whatever its values (primary keys and a small JSON
        # document): planning it again on every execution cost the server more than it saved
        settings = kwargs.setdefault("server_settings", {})
        settings.setdefault("plan_cache_mode", "force_generic_plan")
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


def _fail(batch: list[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _work, done in batch:
        if not done.done():
            done.set_exception(exc)


def _checkpoint(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def sqlite_time(value: datetime) -> str:
    """A UTC time as SQLAlchemy stores it on SQLite (``db.types.UTCDateTime``): naive text
    with microseconds, so the two kinds of writer compare and sort alike."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_read_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL; None for an in-memory database (another connection
    would see a different one)."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return database


class SqliteBusy(Exception):
    """Another process holds SQLite's write lock: nothing was written."""


class SqliteDirect:
    """One ``sqlite3`` connection with the engine's pragmas, but no busy wait, and group
    commit: the units of work that arrive together run in one transaction, each in its own
    savepoint (one failing rolls back only itself). A commit writes every page it touched
    to the WAL; shared by a dozen replies, it costs each a fraction."""

    # a checkpoint after this many commits: under the inbound benchmark's load about
    # SQLite's own 1,000 WAL pages; every 200 held writes back long enough to double p99
    CHECKPOINT_EVERY = 20

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._commits = 0

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA synchronous=NORMAL")
            # no checkpoint on the loop's thread (copying WAL pages into the database and
            # syncing it stalls every request): ``_after_commit`` runs them in a thread
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn = conn
        return self._conn

    async def transact(
        self,
        work: Callable[[sqlite3.Connection], T],
        writer_lock: Callable[[], AbstractAsyncContextManager[None]],
    ) -> T:
        """Run ``work`` in a transaction shared with the work that arrives with it; its
        result once committed. Raises ``SqliteBusy`` (nothing written) when another process
        is writing, and whatever ``work`` raised (its savepoint rolled back)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._pending.append((work, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(writer_lock))
        return await done

    async def _flush(self, writer_lock: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        try:
            await asyncio.sleep(0)  # let the requests of this turn of the loop join in
            while self._pending:
                async with writer_lock():
                    batch, self._pending = self._pending, []
                    try:
                        committed = self._run(batch)
                    except Exception as exc:  # the connection would not even open
                        _fail(batch, exc)
                        continue
                if committed:
                    await self._after_commit(writer_lock)
        finally:
            self._flusher = None
            # cancelled (shutdown) with work queued: its callers must not wait forever
            _fail(self._pending, SqliteBusy("the writer stopped"))
            self._pending = []

    async def _after_commit(
        self, writer_lock: Callable[[], AbstractAsyncContextManager[None]]
    ) -> None:
        """Every ``CHECKPOINT_EVERY`` commits, a passive checkpoint on a connection of its
        own, in a thread, while this process's writers wait (a checkpoint racing new
        commits never catches up, and the WAL only starts over once one has). Without
        it a web process writing only here would grow the WAL without end whenever no
        other connection checkpoints (no worker running)."""
        self._commits += 1
        if self._commits < self.CHECKPOINT_EVERY:
            return
        self._commits = 0
        async with writer_lock():
            try:
                await asyncio.get_running_loop().run_in_executor(None, _checkpoint, self._path)
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed: %s", type(exc).__name__)

    def _run(
        self, batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]]
    ) -> bool:
        """Run a batch in one transaction; True when it committed."""
        conn = self.connection()
        committed = False
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            busy = SqliteBusy(str(exc))
            outcomes = [(done, None, busy) for _work, done in batch]
        else:
            try:
                for work, done in batch:
                    conn.execute("SAVEPOINT unit")
                    try:
                        result = work(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO unit")
                        outcomes.append((done, None, exc))
                    else:
                        outcomes.append((done, result, None))
                    conn.execute("RELEASE unit")
                conn.execute("COMMIT")
                committed = True
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes = [(done, None, exc) for _work, done in batch]
        for done, result, error in outcomes:
            if done.done():
                continue
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)
        return committed

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
