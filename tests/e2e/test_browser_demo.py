"""The demo phone in Chromium: a nurse texts as a demo patient, sees the crisis reply arrive
on the phone, and finds the new critical escalation at the top of the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import select

from bot.demo import DEMO_PASSWORD, MAYA
from bot.sms.signature import sign
from db.enums import Direction, EscalationStatus, Severity
from db.models import Escalation, Message
from tests.e2e.conftest import Live, sign_in, watched_page

pytestmark = pytest.mark.browser

NURSE = "nurse@demo.aftercare"
CRISIS = "I want to kill myself"
FOLLOW_UP = "are you still there"
REPLY_WAIT_MS = 10_000  # the phone polls every 2 s


async def _carrier_text(live: Live, body: str) -> None:
    """A text that arrives from the carrier, not from the page (to watch the page poll)."""
    params = {
        "MessageSid": "SM" + "demoe2e".ljust(32, "0"),
        "AccountSid": "AC" + "3" * 32,
        "From": MAYA.phone,
        "To": "+12025550100",
        "Body": body,
    }
    token = live.settings.twilio_auth_token
    assert token is not None
    headers = {
        "X-Twilio-Signature": sign(
            auth_token=token, url=live.settings.public_base_url + "/twilio/sms", params=params
        ),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            live.base_url + "/twilio/sms", data=urlencode(params), headers=headers
        )
        assert resp.status == 200, await resp.text()


async def test_demo_phone_text_to_critical_escalation(
    demo_live: Live, browser: Any, artifacts: Path
) -> None:
    live = demo_live
    watched = await watched_page(browser)
    context, page = watched.context, watched.page
    errors, failed = watched.errors, watched.failed
    try:
        # sign in as the on-call nurse, straight back to the demo phone
        await sign_in(page, live, "/demo/phone", NURSE, DEMO_PASSWORD)
        await page.wait_for_selector("h1:has-text('Demo phone')")
        assert await page.locator("header nav a.on", has_text="Demo phone").count() == 1

        # pick Maya: choosing her opens her phone with her history, oldest first
        async with page.expect_navigation():
            await page.select_option("select[name=phone]", MAYA.phone)
        assert await page.inner_text(".phone-who") == "Maya"
        bubbles = page.locator("#phone-messages li.bubble")
        assert await bubbles.count() > 20
        assert "post-session" not in (await bubbles.first.inner_text()).lower()
        assert "day after your treatment" in await bubbles.first.inner_text()
        assert "Your answers have been sent" in await bubbles.last.inner_text()

        # text the crisis words: through the signed webhook; the crisis reply lands on the phone
        await page.fill("input[name=body]", CRISIS)
        async with page.expect_navigation():
            await page.click("form.phone-reply button[type=submit]")
        mine = page.locator("#phone-messages li.bubble.mine", has_text=CRISIS)
        await mine.wait_for(state="visible")
        reply = page.locator("#phone-messages li.bubble.theirs.crisis")
        await reply.wait_for(state="visible", timeout=REPLY_WAIT_MS)
        text = await reply.inner_text()
        assert "988" in text and "911" in text
        assert "sent" in text  # the console transport marked it sent

        # a text arriving from the carrier meanwhile shows up without a reload (the 2 s poll)
        await page.evaluate("window.__sameDocument = 'yes'")
        await _carrier_text(live, FOLLOW_UP)
        await page.locator("#phone-messages li.bubble.mine", has_text=FOLLOW_UP).wait_for(
            state="visible", timeout=REPLY_WAIT_MS
        )
        assert await page.evaluate("window.__sameDocument") == "yes"
        texts = await page.locator("#phone-messages li.bubble").all_inner_texts()
        position = {
            key: next(i for i, t in enumerate(texts) if t.startswith(key))
            for key in (CRISIS, "We are worried about you", FOLLOW_UP)
        }
        # oldest first, like a phone: the text, the bot's reply, the later text
        assert position[CRISIS] < position["We are worried about you"] < position[FOLLOW_UP]
        await page.screenshot(path=str(artifacts / "demo-phone.png"), full_page=True)

        async with live.db.read() as s:
            escalation = await s.scalar(
                select(Escalation).where(
                    Escalation.severity == Severity.CRITICAL,
                    Escalation.reason == "crisis_language",
                )
            )
            assert escalation is not None and escalation.status is EscalationStatus.OPEN
            inbound = await s.get(Message, escalation.message_id)
        assert inbound is not None and inbound.direction is Direction.IN
        assert inbound.body == CRISIS and (inbound.provider_sid or "").startswith("SMdemo")

        # the queue: the new critical escalation, first, for Maya
        async with page.expect_navigation():
            await page.click("header nav a:has-text('Queue')")
        row = page.locator(f"#queue-rows tr[data-id='{escalation.id}']")
        await row.wait_for(state="visible")
        assert "sev-critical" in (await row.get_attribute("class") or "")
        row_text = await row.inner_text()
        assert "Maya" in row_text and "Crisis language in a text" in row_text
        first = page.locator("#queue-rows tr[data-id]").first
        assert await first.get_attribute("data-id") == str(escalation.id)
        await page.screenshot(path=str(artifacts / "demo-queue.png"), full_page=True)
        assert errors == [], (errors, failed)  # no CSP violations or script errors
        assert failed == [], failed
    finally:
        await context.close()
