"""A live aftercare on a free port (real SQLite, console SMS) and Debian's Chromium.

The browser is the system's ``/usr/bin/chromium`` driven by Playwright through
``executable_path``; no browser is ever downloaded. Without it the browser tests
skip with the reason, except under ``CI`` (``.ci/run`` installs it), where they fail.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from bot.app import create_app
from bot.migrations import upgrade_async
from bot.services.accounts import NewUser, create_user
from bot.services.library_seed import seed_library
from bot.settings import Settings, load_settings
from db.enums import Role
from db.session import Database

CHROMIUM = Path(os.environ.get("AFTERCARE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CLINICIAN_EMAIL = "nurse@e2e.example.org"
CLINICIAN_PASSWORD = "e2e-clinician-passphrase"
AUTH_TOKEN = "e2e-twilio-auth-token-0123456789"


@dataclass
class Live:
    base_url: str
    settings: Settings
    db: Database
    app: web.Application


@contextlib.asynccontextmanager
async def _serving(port: int, settings: Settings, db: Database) -> AsyncIterator[Live]:
    """The real app on 127.0.0.1:``port`` until the test ends; then the database is closed."""
    app = create_app(settings, database=db)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Live(f"http://127.0.0.1:{port}", settings, db, app)
    finally:
        await runner.cleanup()
        await db.dispose()


@dataclass
class Watched:
    """A page whose script errors (CSP violations included) and failed responses are kept."""

    context: Any
    page: Any
    errors: list[str]
    failed: list[str]


async def watched_page(browser: Any, *, height: int = 900) -> Watched:
    context = await browser.new_context(viewport={"width": 1280, "height": height})
    page = await context.new_page()
    watched = Watched(context, page, [], [])
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            watched.errors.append(f"{msg.text} at {msg.location}") if msg.type == "error" else None
        ),
    )
    context.on(
        "response",
        lambda r: watched.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    return watched


async def sign_in(page: Any, live: Live, path: str, email: str, password: str) -> None:
    """Open ``path``, get sent to the login page, sign in, and land back on ``path``."""
    await page.goto(live.base_url + path)
    assert "/login" in page.url
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert page.url == live.base_url + path


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """The real app in this process and loop, on 127.0.0.1:<free port>, with a fresh database."""
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}"
    await upgrade_async(url)
    settings = load_settings(
        {
            "DATABASE_URL": url,
            "SMS_TRANSPORT": "console",
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "PUBLIC_BASE_URL": base_url,  # http: session cookies are not Secure
            "SECRET_KEY": "e2e-" + "s" * 40,
            "CLINIC_NAME": "E2E Clinic",
            "CLINIC_PHONE": "+12025550100",
        }
    )
    db = Database(url)
    now = datetime.now(UTC)
    async with db.write() as session:
        await seed_library(session=session, now=now)
        await create_user(
            session=session,
            new=NewUser(CLINICIAN_EMAIL, Role.CLINICIAN, CLINICIAN_PASSWORD, "Nia Nurse"),
            now=now,
        )
    async with _serving(port, settings, db) as served:
        yield served


@pytest.fixture
def chromium_path() -> Path:
    """Debian's Chromium, or skip (fail under CI, which must run the browser tests)."""
    if not CHROMIUM.exists():
        reason = (
            f"Debian's Chromium is not at {CHROMIUM} (apt-get install chromium); "
            "browser tests run under CI, where .ci/run installs it"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def demo_live(tmp_path: Path) -> AsyncIterator[Live]:
    """``aftercare demo`` on 127.0.0.1:<free port>: demo mode, the seeded story, no worker."""
    from bot.demo import demo_settings, seed_demo

    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    await upgrade_async(url)
    settings = demo_settings(
        {
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "PUBLIC_BASE_URL": base_url,
            "SECRET_KEY": "e2e-" + "d" * 40,
        },
        host="127.0.0.1",
        port=port,
        database_url=url,
    )
    db = Database(url)
    await seed_demo(db, settings, datetime.now(UTC))
    async with _serving(port, settings, db) as served:
        yield served
