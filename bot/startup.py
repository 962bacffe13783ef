"""Checks before ``serve`` and ``worker`` start: a clear line instead of a traceback.

A server that starts on a database it cannot use reports itself healthy and fails
on the first sign-in; better to refuse at once and say what to run.
"""

from __future__ import annotations

import asyncio
import os

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from bot.migrations import alembic_config
from db.session import Database

CONNECT_TIMEOUT_S = 10.0


class StartupError(RuntimeError):
    """Why the process cannot start, in one line for the operator."""


def _where(url: str) -> str:
    """The host (or SQLite file) of a URL, never its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _current(conn: Connection) -> str | None:
    """The migration the database is at (read directly: Alembic's context logs at INFO)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def check_database(url: str) -> None:
    """The database answers and is at the code's migration head, or :class:`StartupError`."""
    parsed = make_url(url)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not os.path.exists(str(file)):  # noqa: ASYNC240
        raise StartupError(f"there is no database file at {file}: run `aftercare migrate` first")
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    db = Database(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            async with db.engine.connect() as conn:
                current = await conn.run_sync(_current)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise StartupError(f"cannot reach the database at {_where(url)}: {reason}") from None
    except Exception as exc:  # driver errors: bad password, unknown database, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise StartupError(f"cannot use the database at {_where(url)}: {first}") from None
    finally:
        await db.dispose()
    if current is None:
        raise StartupError(
            f"the database at {_where(url)} has not been migrated: run `aftercare migrate` first"
        )
    if current != head:
        raise StartupError(
            f"the database at {_where(url)} is at migration {current}, this version needs "
            f"{head}: run `aftercare migrate` first"
        )
