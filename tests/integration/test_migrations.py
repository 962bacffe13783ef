"""Migrations run both ways and match the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from bot.migrations import downgrade_async, upgrade_async
from db.models import Base, Patient
from db.session import Database

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


async def _tables(db: Database) -> set[str]:
    def names(conn: Connection) -> set[str]:
        from sqlalchemy import inspect

        return set(inspect(conn).get_table_names())

    async with db.engine.connect() as conn:
        return await conn.run_sync(names)


async def test_upgrade_downgrade_upgrade_on_empty_database(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        await upgrade_async(empty_db_url)
        assert set(Base.metadata.tables) <= await _tables(db)
        await downgrade_async(empty_db_url)
        assert await _tables(db) <= {"alembic_version"}
        await upgrade_async(empty_db_url)
        assert set(Base.metadata.tables) <= await _tables(db)
    finally:
        await db.dispose()


async def test_round_trip_with_rows(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        await upgrade_async(empty_db_url)
        async with db.write() as s:
            s.add(
                Patient(
                    first_name="Ana",
                    phone="+12025550123",
                    timezone="America/New_York",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        await downgrade_async(empty_db_url)
        await upgrade_async(empty_db_url)
        async with db.read() as s:
            assert await s.scalar(select(func.count()).select_from(Patient)) == 0
            # the schema is usable again after the round trip
            assert (await s.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await db.dispose()


async def test_models_and_migrations_agree(db_url: str) -> None:
    db = Database(db_url)

    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))

    try:
        async with db.engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await db.dispose()
    assert differences == []
