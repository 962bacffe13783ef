"""A nurse's shift in Chromium: a new critical alert reaches a background tab, the alert's
page shows the patient's words first, and the nurse texts the patient and hands the alert on
without leaving the page; the patient's page reads as conversations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.services.accounts import NewUser, create_user
from bot.services.escalations import raise_escalation
from db.enums import Role, Severity
from db.models import Message, Patient
from tests.e2e.conftest import CLINICIAN_EMAIL, CLINICIAN_PASSWORD, Live, sign_in, watched_page


async def _patient(live: Live, name: str, phone: str) -> int:
    async with live.db.write() as s:
        p = Patient(
            first_name=name,
            last_name="Okafor",
            phone=phone,
            timezone="America/Chicago",
            language="en",
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        s.add(p)
        await s.flush()
        return p.id


async def _critical(live: Live, patient_id: int, words: str) -> int:
    async with live.db.write() as s:
        text = Message(
            patient_id=patient_id,
            direction="in",
            phone="+12025550177",
            body=words,
            status="received",
            created_at=datetime.now(UTC),
        )
        s.add(text)
        await s.flush()
        e = raise_escalation(
            session=s,
            severity=Severity.CRITICAL,
            reason="crisis_language",
            summary="Crisis language (suicidal) in a text.",
            now=datetime.now(UTC),
            patient_id=patient_id,
            message_id=text.id,
        )
        await s.flush()
        return e.id


@pytest.mark.browser
async def test_a_new_critical_changes_the_tab_title(live: Live, browser: Any) -> None:
    watched = await watched_page(browser)
    page = watched.page
    try:
        await page.clock.install()
        await sign_in(page, live, "/", CLINICIAN_EMAIL, CLINICIAN_PASSWORD)
        title = await page.title()
        assert "New critical" not in title
        pid = await _patient(live, "Maya", "+12025550177")
        eid = await _critical(live, pid, "i dont want to be here anymore")
        async with page.expect_response(lambda r: "/queue/rows" in r.url):
            await page.clock.fast_forward("00:16")
        await page.wait_for_function("document.title.includes('New critical')")
        assert (await page.title()).startswith("(1) New critical alert")
        assert await page.locator(f"#queue-rows tr[data-id='{eid}']").count() == 1
        assert watched.errors == [], watched.errors
    finally:
        await watched.context.close()


@pytest.mark.browser
async def test_the_alert_page_words_text_and_hand_off(live: Live, browser: Any) -> None:
    async with live.db.write() as s:
        await create_user(
            session=s,
            new=NewUser("dev@e2e.example.org", Role.CLINICIAN, "amber walrus lantern 7", "Dev"),
            now=datetime.now(UTC),
        )
    pid = await _patient(live, "Sam", "+12025550178")
    eid = await _critical(live, pid, "i bought a rope today")
    watched = await watched_page(browser)
    page = watched.page
    try:
        await sign_in(page, live, f"/escalations/{eid}", CLINICIAN_EMAIL, CLINICIAN_PASSWORD)
        words = page.locator("blockquote.patient-words")
        assert "i bought a rope today" in await words.inner_text()
        box = await words.bounding_box()
        assert box is not None and box["y"] < 400  # at the top, without scrolling
        # text the patient from the alert (it is daytime or the page asks first)
        await page.fill("#text-body", "Sam, this is Nia from the clinic. Calling you now.")
        async with page.expect_navigation():
            await page.click("form.text-patient button[type=submit]")
        if "confirm_night" in await page.content():
            await page.check("input[name=confirm_night]")
            async with page.expect_navigation():
                await page.click("form.text-patient button[type=submit]")
        assert "Your text is on its way" in await page.inner_text("p.notice")
        # claim, then hand it to Dev
        async with page.expect_navigation():
            await page.click("button:has-text('Claim')")
        await page.select_option("select[name=user_id]", label="Dev")
        async with page.expect_navigation():
            await page.click("form[action$='/assign'] button")
        assert "Assigned." in await page.inner_text("p.notice")
        assert "Dev" in await page.inner_text("dl")
        # the patient's page: the text is in the conversations, under the texts outside
        await page.goto(f"{live.base_url}/patients/{pid}")
        conversations = await page.inner_text("#conversations")
        assert "Texts outside a check-in" in conversations
        assert "Calling you now." in conversations and "i bought a rope today" in conversations
        assert watched.errors == [], watched.errors
    finally:
        await watched.context.close()
