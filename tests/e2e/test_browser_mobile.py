"""A clinician on a phone (390 x 844): the queue, an escalation and a patient's page fit the
screen (no sideways scrolling of the page), and Sign out and the queue's links are on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import select

from bot.services.escalations import raise_escalation
from bot.sms.signature import sign
from db.enums import CheckinStatus, Severity
from db.models import Checkin, Escalation, Patient, Score
from tests.e2e.conftest import CLINICIAN_EMAIL, CLINICIAN_PASSWORD, Live, sign_in

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 390, 844
PATIENT_PHONE = "+12025550162"
# a crisis text with a long unbroken "word" (a pasted link): it must wrap, not widen the page
CRISIS = "i want to kill myself https://example.org/" + "a-very-long-path-segment-" * 6


async def _seed(live: Live) -> int:
    """A patient with a PHQ-9 trend and a moderate escalation (the crisis text adds a
    critical one); the patient's id."""
    now = datetime.now(UTC)
    async with live.db.write() as s:
        p = Patient(
            first_name="Maximiliana-Josephina",
            phone=PATIENT_PHONE,
            timezone="America/Argentina/Buenos_Aires",
            language="en",
            created_at=now - timedelta(days=60),
            updated_at=now - timedelta(days=60),
        )
        s.add(p)
        await s.flush()
        for weeks_ago, total, band in ((6, 19, "moderately severe"), (3, 11, "moderate")):
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
        raise_escalation(
            session=s,
            severity=Severity.MODERATE,
            reason="phq9_moderate",
            summary="PHQ-9 11",
            now=now - timedelta(hours=3),
            patient_id=p.id,
        )
        return p.id


async def _text_from_patient(live: Live, body: str) -> None:
    params = {
        "MessageSid": "SM" + "mobile".ljust(32, "0"),
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


async def _fits(page: Any, what: str) -> None:
    """Nothing wider than the viewport: the page itself never scrolls sideways."""
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth]"
    )
    assert max(widths) <= WIDTH, (what, widths, await _widest(page))


async def _widest(page: Any) -> list[str]:
    """For the failure message: the elements that stick out past the right edge."""
    return list(
        await page.evaluate(
            """(w) => Array.from(document.querySelectorAll('body *'))
                .filter((el) => el.getBoundingClientRect().right > w + 0.5)
                .slice(0, 8)
                .map((el) => el.tagName.toLowerCase() + '.' + el.className + ' '
                     + Math.round(el.getBoundingClientRect().right))""",
            WIDTH,
        )
    )


async def _on_screen(locator: Any, what: str) -> None:
    await locator.wait_for(state="visible")
    box = await locator.bounding_box()
    assert box is not None, what
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (what, box)
    assert box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, (what, box)


async def test_queue_escalation_and_patient_fit_a_phone(
    live: Live, browser: Any, artifacts: Path
) -> None:
    patient_id = await _seed(live)
    await _text_from_patient(live, CRISIS)
    async with live.db.read() as s:
        critical = await s.scalar(
            select(Escalation.id).where(Escalation.severity == Severity.CRITICAL)
        )
    assert critical is not None
    context = await browser.new_context(
        viewport={"width": WIDTH, "height": HEIGHT}, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        await sign_in(page, live, "/", CLINICIAN_EMAIL, CLINICIAN_PASSWORD)
        await page.wait_for_selector("#queue-rows tr[data-id]")
        await _fits(page, "queue")
        await _on_screen(page.get_by_role("button", name="Sign out"), "Sign out")
        first = page.locator("#queue-rows tr[data-id]").first
        assert await first.get_attribute("data-id") == str(critical)  # most severe first
        await _on_screen(first.locator("td a").first, "the first row's reason link")
        await _on_screen(first.locator("a.button", has_text="Open"), "the first row's Open")
        # each value on the card says what it is: its column's heading (set by app.js)
        labels = await first.evaluate(
            "(tr) => Array.from(tr.cells).map((td) => td.getAttribute('data-label'))"
        )
        heads = await page.eval_on_selector_all(
            "table.queue thead th", "(ths) => ths.map((th) => th.textContent.trim())"
        )
        assert labels == heads, (labels, heads)
        shown = (
            await first.locator("td")
            .nth(2)
            .evaluate("(td) => getComputedStyle(td, '::before').content")
        )
        assert shown == f'"{heads[2]}"', shown
        await page.screenshot(path=str(artifacts / "mobile-queue.png"), full_page=True)

        async with page.expect_navigation():
            await first.locator("a.button", has_text="Open").click()
        assert page.url.endswith(f"/escalations/{critical}")
        await page.wait_for_selector("figure.chart svg.trend")
        await _fits(page, "escalation")
        await _on_screen(page.get_by_role("button", name="Sign out"), "Sign out (escalation)")
        chart = await page.locator("figure.chart svg.trend").first.bounding_box()
        assert chart is not None and chart["x"] + chart["width"] <= WIDTH, chart
        await page.screenshot(path=str(artifacts / "mobile-escalation.png"), full_page=True)

        await page.goto(f"{live.base_url}/patients/{patient_id}")
        await page.wait_for_selector("h1:has-text('Maximiliana-Josephina')")
        await _fits(page, "patient")
        await _on_screen(page.get_by_role("button", name="Sign out"), "Sign out (patient)")
        await page.screenshot(path=str(artifacts / "mobile-patient.png"), full_page=True)

        await page.goto(f"{live.base_url}/patients")
        await _fits(page, "patients")
        await _on_screen(page.get_by_role("link", name="Maximiliana-Josephina"), "patient link")
        await page.screenshot(path=str(artifacts / "mobile-patients.png"), full_page=True)
        assert errors == []
    finally:
        await context.close()
