"""Shared fixtures: a migrated database on SQLite and on a real PostgreSQL.

PostgreSQL tests run against ``TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Each test gets its own
database, cloned from a migrated template, and drops it afterwards. Without a
server they are skipped with the reason shown, except under ``CI``, where a
missing server fails the run.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from bot.logs import handler as log_handler
from bot.migrations import upgrade
from db.models import Base
from db.session import Database

# Property tests judge behaviour, not speed: no per-example deadline on a busy machine.
hypothesis_settings.register_profile("aftercare", deadline=None)
hypothesis_settings.load_profile("aftercare")

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
IN_CI = bool(os.environ.get("CI"))


def _dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def pg_url_for(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(PG_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_admin(sql: str) -> None:
    asyncio.run(_pg_admin(sql))


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable server, or skip (fail under CI)."""
    try:
        pg_admin("SELECT 1")
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {exc}"
        if IN_CI:
            pytest.fail(reason + " (CI requires PostgreSQL; .ci/run starts it)")
        pytest.skip(reason)
    return PG_URL


@pytest.fixture(scope="session")
def pg_template(postgres_server: str) -> Iterator[str]:
    """A migrated template database that per-test databases are cloned from."""
    name = f"aftercare_tmpl_{os.getpid()}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_admin(f'CREATE DATABASE "{name}"')
    upgrade(pg_url_for(name))
    yield name
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmpl") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def new_pg_database(template: str | None = None) -> str:
    name = f"aftercare_t_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    pg_admin(f'CREATE DATABASE "{name}"{clause}')
    return name


def drop_pg_database(name: str) -> None:
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_shared(pg_template: str) -> Iterator[str]:
    """One migrated database for the session's ``db_url`` tests; each test empties it first
    (fast isolation). The template itself stays pristine for tests that clone it."""
    name = new_pg_database(pg_template)
    yield name
    drop_pg_database(name)


async def _truncate_all(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        tables = [t for t in Base.metadata.tables]
        await conn.execute(
            "TRUNCATE TABLE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = pg_url_for(request.getfixturevalue("pg_shared"))
    asyncio.run(_truncate_all(url))
    yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty (unmigrated) database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("postgres_server")
    name = new_pg_database()
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url)
    try:
        yield db
    finally:
        await db.dispose()


# -- no PHI in logs ------------------------------------------------------------------------------
# Every record any test produces goes through the production JSON formatter into a buffer;
# at the end of the run the buffer is scanned for unmasked phone numbers and for message
# bodies the tests send. A hit fails the whole run.

_LOG_BUFFER = io.StringIO()
UNMASKED_PHONE = re.compile(r"\+\d{10,15}\b")
SENTINEL_BODIES = (
    "kill myself",
    "want to die",
    "took all my pills",
    "feeling a bit off today",
    "just wanted to say",
    "hello there",
)


def scan_for_phi(text: str) -> list[str]:
    """Lines of formatted log output that carry a phone number or a known message body."""
    hits = []
    for line in text.splitlines():
        lowered = line.lower()
        if UNMASKED_PHONE.search(line) or any(body in lowered for body in SENTINEL_BODIES):
            hits.append(line[:300])
    return hits


def pytest_configure(config: pytest.Config) -> None:
    handler = log_handler(_LOG_BUFFER, fmt="json")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    for noisy in ("sqlalchemy", "aiosqlite", "asyncio", "hypothesis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    hits = scan_for_phi(_LOG_BUFFER.getvalue())
    if hits:
        sys.stderr.write(
            "\nPHI found in log output (phone numbers must be masked, bodies never logged):\n"
        )
        for hit in hits[:20]:
            sys.stderr.write(f"  {hit}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
