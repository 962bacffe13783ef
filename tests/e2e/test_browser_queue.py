"""A clinician in Chromium: sign in, watch a crisis text arrive on the open queue without a
reload, open it, read the transcript and trend chart, claim, resolve, see it leave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import select

from bot.sms.signature import sign
from db.enums import CheckinStatus, Disposition, EscalationStatus, Severity
from db.models import Checkin, Escalation, Patient, Score
from tests.e2e.conftest import CLINICIAN_EMAIL, CLINICIAN_PASSWORD, Live, sign_in, watched_page

pytestmark = pytest.mark.browser

PATIENT_PHONE = "+12025550161"
CRISIS = "i can't go on, i want to kill myself"
REFRESH_WAIT_MS = 30_000  # the page polls every 15 s


async def _patient_with_history(live: Live) -> int:
    """Maya, with three earlier PHQ-9 totals so the chart has a trend to draw."""
    now = datetime.now(UTC)
    async with live.db.write() as s:
        p = Patient(
            first_name="Maya",
            phone=PATIENT_PHONE,
            timezone="America/New_York",
            language="en",
            created_at=now - timedelta(days=60),
            updated_at=now - timedelta(days=60),
        )
        s.add(p)
        await s.flush()
        for weeks_ago, total, band in (
            (6, 19, "moderately severe"),
            (4, 13, "moderate"),
            (2, 8, "mild"),
        ):
            at = now - timedelta(weeks=weeks_ago)
            c = Checkin(
                patient_id=p.id,
                flow_key="phq9",
                flow_version=1,
                status=CheckinStatus.COMPLETED,
                due_at=at,
                started_at=at,
                completed_at=at,
                reminder_after_s=4 * 3600,
                expiry_after_s=24 * 3600,
                created_at=at,
            )
            s.add(c)
            await s.flush()
            s.add(
                Score(
                    checkin_id=c.id,
                    patient_id=p.id,
                    instrument="phq9",
                    total=total,
                    band=band,
                    flags=[],
                    complete=True,
                    created_at=at,
                )
            )
        return p.id


async def _text_from_patient(live: Live, body: str) -> None:
    """Twilio's webhook, signed with the configured auth token against the public URL."""
    params = {
        "MessageSid": "SM" + "e2e".ljust(32, "0"),
        "AccountSid": "AC" + "2" * 32,
        "From": PATIENT_PHONE,
        "To": "+12025550199",
        "Body": body,
        "NumMedia": "0",
    }
    token = live.settings.twilio_auth_token
    assert token is not None
    signature = sign(
        auth_token=token, url=live.settings.public_base_url + "/twilio/sms", params=params
    )
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            live.base_url + "/twilio/sms",
            data=urlencode(params),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert resp.status == 200, await resp.text()


async def test_clinician_works_a_critical_escalation_in_the_browser(
    live: Live, browser: Any, artifacts: Path
) -> None:
    patient_id = await _patient_with_history(live)
    watched = await watched_page(browser)
    context, page = watched.context, watched.page
    errors, failed = watched.errors, watched.failed
    try:
        # sign in: the queue sends us to the login page and back
        await sign_in(page, live, "/", CLINICIAN_EMAIL, CLINICIAN_PASSWORD)
        await page.wait_for_selector("h1:has-text('Escalation queue')")
        assert "Nothing waiting" in await page.inner_text("#queue-rows")
        assert await page.locator("#queue-rows tr[data-id]").count() == 0
        cookies = {c["name"]: c for c in await context.cookies()}
        assert cookies["aftercare_session"]["httpOnly"]
        assert cookies["aftercare_session"]["sameSite"] == "Lax"

        # a crisis text arrives while the queue is open; the page must not reload to show it
        await page.evaluate("window.__sameDocument = 'yes'")
        await _text_from_patient(live, CRISIS)
        async with live.db.read() as s:
            escalation = await s.scalar(
                select(Escalation).where(Escalation.severity == Severity.CRITICAL)
            )
        assert escalation is not None and escalation.patient_id == patient_id
        row = page.locator(f"#queue-rows tr[data-id='{escalation.id}']")
        await row.wait_for(state="visible", timeout=REFRESH_WAIT_MS)
        assert await page.evaluate("window.__sameDocument") == "yes"
        text = await row.inner_text()
        assert "critical" in text.lower() and "Crisis language in a text" in text
        assert "Maya" in text
        assert "sev-critical" in (await row.get_attribute("class") or "")
        await page.screenshot(path=str(artifacts / "queue.png"), full_page=True)

        # open it: transcript, phone, and the trend chart drawn on the server
        async with page.expect_navigation():
            await row.locator("a", has_text="Open").click()
        assert page.url.endswith(f"/escalations/{escalation.id}")
        transcript = await page.inner_text("ol.transcript")
        assert CRISIS in transcript
        assert await page.get_attribute("a.call", "href") == f"tel:{PATIENT_PHONE}"
        chart = page.locator("figure.chart svg.trend")
        await chart.wait_for(state="visible")
        assert await chart.locator("circle.point").count() == 3
        assert await chart.locator("rect.band").count() == 5
        box = await chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 60
        await page.screenshot(path=str(artifacts / "escalation.png"), full_page=True)

        # claim
        async with page.expect_navigation():
            await page.click("form[action$='/claim'] button")
        await page.wait_for_selector("text=Claimed by")
        assert "Nia Nurse" in await page.inner_text("section.grid")
        assert await page.locator("form[action$='/release']").count() == 1

        # resolve with a disposition and a note
        await page.select_option("select[name=disposition]", "sent_to_emergency_care")
        await page.fill("textarea[name=note]", "Called her, EMS on the way.")
        async with page.expect_navigation():
            await page.click("form.resolve button[type=submit]")
        assert page.url == live.base_url + "/?notice=resolved"
        assert "Escalation resolved." in await page.inner_text("p.notice")
        assert await page.locator(f"#queue-rows tr[data-id='{escalation.id}']").count() == 0
        assert "Nothing waiting" in await page.inner_text("#queue-rows")
        async with live.db.read() as s:
            done = await s.get(Escalation, escalation.id)
        assert done is not None and done.status is EscalationStatus.RESOLVED
        assert done.disposition is Disposition.SENT_TO_EMERGENCY_CARE
        assert done.note == "Called her, EMS on the way."

        # the patient's page, with the same trend and the escalation on its conversation
        await page.goto(f"{live.base_url}/patients/{patient_id}")
        await page.wait_for_selector("svg.trend")
        conversations = await page.inner_text("#conversations")
        assert "critical" in conversations.lower() and CRISIS in conversations
        await page.screenshot(path=str(artifacts / "patient.png"), full_page=True)
        assert errors == [], (errors, failed)  # no CSP violations or script errors
    finally:
        await context.close()
