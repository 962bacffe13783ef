"""One async engine and session factory for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite: WAL, foreign keys, a busy timeout, ``synchronous=NORMAL``, and write
transactions that begin with ``BEGIN IMMEDIATE``: a deferred transaction that
later upgrades to a writer gets SQLITE_BUSY at once, whatever the busy
timeout, so every writer takes the lock up front. Within one process writers
also queue on an ``asyncio.Lock``, so they wait without spinning on the file.
Reads use a second engine with ordinary deferred transactions, which WAL lets
run beside the writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.parsed_cache import SESSION_INFO_KEY, ParsedDefinitions

SQLITE_BUSY_TIMEOUT_MS = 30_000
SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class DatabaseURLError(ValueError):
    pass


def check_url(url: str) -> str:
    """Return the driver name of ``url`` or raise with what is accepted."""
    try:
        driver = make_url(url).drivername
    except Exception as exc:
        raise DatabaseURLError(f"not a database URL: {exc}") from exc
    if driver not in SUPPORTED_DRIVERS:
        raise DatabaseURLError(
            f"driver {driver!r} is not supported; use one of {', '.join(SUPPORTED_DRIVERS)}"
        )
    return driver


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine with the project's settings; on SQLite, writes begin IMMEDIATE."""
    return _create(url, immediate=True, **kwargs)


def _create(url: str, *, immediate: bool, **kwargs: Any) -> AsyncEngine:
    driver = check_url(url)
    # SQL parameters carry PHI (phone numbers, message bodies): keep them out of error text.
    kwargs.setdefault("hide_parameters", True)
    if driver.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        _sqlite_pragmas(engine, immediate=immediate)
        return engine
    # No pre-ping (a round trip per checkout); a dropped connection fails one transaction,
    # which invalidates the pool, and the next ones reconnect.
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_async_engine(url, **kwargs)


class Database:
    """The engines, session factories and parsed-definition caches of one process.

    Its sessions carry ``parsed`` in ``session.info`` (see ``db.parsed_cache``), so code that
    only has a session reaches this database's caches and never a module's.
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.is_sqlite = check_url(url).startswith("sqlite")
        self.engine = _create(url, immediate=True, **engine_kwargs)
        self.read_engine = (
            _create(url, immediate=False, **engine_kwargs) if self.is_sqlite else self.engine
        )
        self.parsed = ParsedDefinitions()
        info = {SESSION_INFO_KEY: self.parsed}
        self._write_factory = async_sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._read_factory = async_sessionmaker(self.read_engine, expire_on_commit=False, info=info)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # SQLite keeps the read engine's deferred transactions: switching a pooled pysqlite
        # connection to autocommit and back would leave it in its implicit-transaction mode
        self._plain_engine = (
            self.read_engine
            if self.is_sqlite
            else self.read_engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on error."""
        if self._write_lock is None:
            async with self._write_factory() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._write_factory() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write_conn(self) -> AsyncIterator[AsyncConnection]:
        """``write`` without an ORM session, for a few Core statements on a hot path."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work (never committed)."""
        async with self._read_factory() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write_one(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one writing statement: on PostgreSQL in autocommit, the statement
        its own transaction without BEGIN/COMMIT round trips; ``write_conn`` on SQLite."""
        if self.is_sqlite:
            async with self.write_conn() as conn:
                yield conn
            return
        async with self._plain_engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def plain_reads(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for the hot read paths (session and token lookups, the queue
        API, the patient page): no ORM overhead and, on PostgreSQL, autocommit, so no
        BEGIN/ROLLBACK round trips. For reads that need no snapshot across statements
        (READ COMMITTED gives each statement its own anyway) and single-statement writes."""
        async with self._plain_engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.read_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
