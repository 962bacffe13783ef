"""``/healthz`` tells whether the database answers."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.settings import load_settings
from db.session import Database


def _settings(url: str):  # type: ignore[no-untyped-def]
    return load_settings({"DATABASE_URL": url}, demo=True)


async def test_healthz_ok(db_url: str) -> None:
    app = create_app(_settings(db_url))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert (await resp.json())["database"] == "up"


async def test_healthz_503_when_database_is_gone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a file that is not (or no longer) a SQLite database
    path = tmp_path / "gone.db"
    path.write_bytes(b"this is not a database" * 100)
    app = create_app(_settings(f"sqlite+aiosqlite:///{path}"))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert (await resp.json())["database"] == "down"


async def test_healthz_503_when_postgres_is_unreachable() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    db = Database(url, connect_args={"timeout": 1})
    app = create_app(_settings(url), database=db)
    try:
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/healthz")
            assert resp.status == 503
    finally:
        await db.dispose()
