"""Screenshots of the clinician pages for the README, made from the demo's own story.

Seeds the demo data into a temporary SQLite file, serves the app on a free
loopback port, signs in as the demo nurse in Debian's Chromium (never a
downloaded browser) and saves the queue, an escalation and a patient's
conversations as PNG files. Run:

    .venv/bin/python docs/screenshots.py [--out docs/images] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from aiohttp import web  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bot.app import create_app  # noqa: E402
from bot.demo import DEMO_PASSWORD, MAYA, SAM, demo_settings, seed_demo  # noqa: E402
from bot.migrations import upgrade_async  # noqa: E402
from db.enums import EscalationStatus  # noqa: E402
from db.models import Escalation, Patient  # noqa: E402
from db.session import Database  # noqa: E402

NURSE = "nurse@demo.aftercare"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
SHOTS = ("queue.png", "escalation.png", "conversation.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def make_screenshots(out: Path, chromium: Path) -> list[Path]:
    """Write the README's screenshots to ``out``; return their paths."""
    from playwright.async_api import async_playwright

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before serving
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        port = _free_port()
        await upgrade_async(url)
        settings = demo_settings(
            {"CLINIC_TIMEZONE": "America/New_York"}, host="127.0.0.1", port=port, database_url=url
        )
        db = Database(url)
        await seed_demo(db, settings, datetime.now(UTC))
        async with db.read() as session:
            # Sam's answer to PHQ-9 item 9: an alert with the patient's own words
            worst = await session.scalar(
                select(Escalation.id)
                .join(Patient, Patient.id == Escalation.patient_id)
                .where(Escalation.status != EscalationStatus.RESOLVED, Patient.phone == SAM.phone)
                .order_by(Escalation.severity_rank, Escalation.created_at)
                .limit(1)
            )
            maya = await session.scalar(select(Patient.id).where(Patient.phone == MAYA.phone))
        runner = web.AppRunner(create_app(settings, database=db), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(f"{base}/login")
                await page.fill("input[name=email]", NURSE)
                await page.fill("input[name=password]", DEMO_PASSWORD)
                async with page.expect_navigation():
                    await page.click("button[type=submit]")
                paths = [out / name for name in SHOTS]
                await page.goto(f"{base}/")
                await page.screenshot(path=str(paths[0]))
                await page.goto(f"{base}/escalations/{worst}")
                await page.screenshot(path=str(paths[1]))
                await page.goto(f"{base}/patients/{maya}#conversations")
                # the newest check-in that raised an alert: its block, header to last reply
                await page.locator("#conversations article.block.escalated").first.screenshot(
                    path=str(paths[2])
                )
                await browser.close()
        finally:
            await runner.cleanup()
            await db.dispose()
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    args = parser.parse_args()
    if not args.chromium.exists():
        print(f"no Chromium at {args.chromium}: apt-get install -y chromium", file=sys.stderr)
        return 2
    for path in asyncio.run(make_screenshots(args.out, args.chromium)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
