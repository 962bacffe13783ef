"""The escalation page: the patient's own words first, other open alerts, answers read in words,
and for "not responding" what was sent."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from bot.services import dispatch
from db.enums import Severity
from db.models import Checkin, Escalation
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _escalations(h: Harness) -> list[Escalation]:
    async with h.db.read() as s:
        return list((await s.scalars(select(Escalation).order_by(Escalation.id))).all())


async def _page(h: Harness, escalation_id: int) -> str:
    resp = await h.client.get(f"/escalations/{escalation_id}")
    assert resp.status == 200
    return await resp.text()


async def test_crisis_words_come_first_with_the_question_they_interrupted(h: Harness) -> None:
    p = await h.patient("Maya")
    await h.start(p, "phq9")
    await h.sms(p.phone, "1")
    await h.sms(p.phone, "honestly i keep thinking everyone would be better off if i was gone")
    (e,) = [x for x in await _escalations(h) if x.severity in (Severity.CRITICAL, Severity.HIGH)]
    await h.login(await h.user())
    html = await _page(h, e.id)
    words = html.index('class="patient-words"')
    assert words < html.index("What happened")  # above everything else
    quote = re.search(r'<blockquote class="patient-words">(.*?)</blockquote>', html, re.S)
    assert quote and "better off if i was gone" in quote.group(1)
    assert "in reply to <q>2/9" in html  # the question it interrupted
    # the answers table says the questions and what each reply was read as
    assert "1 — Several days" in html and "Little interest or pleasure" in html


async def test_a_safety_answer_is_quoted_with_what_it_was_read_as(h: Harness) -> None:
    p = await h.patient("Sam")
    await h.start(p, "phq9")
    for reply in ["1", "1", "1", "1", "1", "1", "1", "1", "1"]:
        await h.sms(p.phone, reply)
    item9 = [e for e in await _escalations(h) if e.reason == "item9_positive"]
    assert item9
    await h.login(await h.user())
    html = await _page(h, item9[0].id)
    assert "in reply to <q>9/9 Thoughts that you would be better off dead" in html
    assert "read as <strong>1 — Several days</strong>" in html


async def test_other_open_alerts_and_the_hold_are_shown(h: Harness) -> None:
    p = await h.patient("Sam")
    await h.start(p, "phq9")
    for reply in ["3", "3", "3", "3", "3", "3", "3", "3", "2"]:
        await h.sms(p.phone, reply)
    found = await _escalations(h)
    assert len(found) >= 2
    await h.login(await h.user())
    html = await _page(h, found[0].id)
    assert "Other open alerts for this patient" in html
    for other in found[1:]:
        assert f'href="/escalations/{other.id}"' in html
    assert (
        "any clinician who claims or resolves it lifts the hold" in html
        or "until a clinician claims" in html
    )


async def test_not_responding_shows_what_was_sent(h: Harness) -> None:
    p = await h.patient("Lena")
    for _ in range(2):
        checkin = await h.start(p, "daily_mood")
        async with h.db.read() as s:
            expires = (await s.get(Checkin, checkin.id)).expires_at  # type: ignore[union-attr]
        assert expires is not None
        h.clock.set(expires)
        assert (await dispatch.expire_due(h.db, h.settings, h.clock.now())).expired == 1
        h.clock.advance(hours=12)
    found = [e for e in await _escalations(h) if e.reason == "not_responding"]
    assert found, "two expired check-ins raise not responding"
    await h.login(await h.user())
    html = await _page(h, found[0].id)
    assert "Sent since the patient last wrote" in html
    assert "No messages." not in html
    assert html.count('class="msg-out"') >= 2
