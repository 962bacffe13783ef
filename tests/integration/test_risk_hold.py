"""The risk hold: a high or critical result stops routine check-ins until a clinician claims
it, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.services import holds, queue
from db.enums import CheckinStatus, Disposition, Severity
from db.models import Checkin, Escalation, Patient, User
from tests.integration.test_dispatch import add_checkin, get, tick
from tests.web.harness import START, Harness, harness


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    async with harness(db_url) as hh:
        yield hh


async def clinician(h: Harness) -> int:
    email = await h.user()
    async with h.db.read() as s:
        user_id = await s.scalar(select(User.id).where(User.email == email))
    assert user_id is not None
    return user_id


async def critical_screen(h: Harness, p: Patient) -> tuple[Checkin, Escalation]:
    """A C-SSRS screener answered with intent (critical), a GAD-7 waiting behind it."""
    screen = await add_checkin(h, p, "cssrs_screen", START - timedelta(minutes=2))
    gad7 = await add_checkin(h, p, "gad7", START - timedelta(minutes=1))
    assert (await tick(h)).started == 1
    for answer in ("yes", "yes", "no", "yes I do", "no", "no"):
        await h.sms(p.phone, answer)
    assert (await get(h, screen)).status is CheckinStatus.COMPLETED
    async with h.db.read() as s:
        found = (await s.scalars(select(Escalation).where(Escalation.patient_id == p.id))).all()
    critical = [e for e in found if e.severity is Severity.CRITICAL]
    assert [e.reason for e in critical] == ["cssrs_intent"]
    return gad7, critical[0]


async def test_a_critical_result_holds_the_waiting_checkin_until_it_is_claimed(
    h: Harness,
) -> None:
    p = await h.patient()
    gad7, item = await critical_screen(h, p)
    sent = h.twilio.sent_to(p.phone)
    # the crisis reply is the last thing the patient got: no "1/7 Feeling nervous" after it
    assert "988" in sent[-1] or "988" in sent[-2]
    assert not any("nervous" in body for body in sent)
    assert (await get(h, gad7)).status is CheckinStatus.SCHEDULED
    async with h.db.read() as s:
        hold = await holds.hold_of(s, p.id)
    assert hold is not None and (hold.escalation_id, hold.severity) == (item.id, Severity.CRITICAL)

    # the worker keeps it due, not missed, while the item waits
    h.clock.advance(minutes=10)
    result = await tick(h)
    assert (result.held, result.started, result.missed) == (1, 0, 0)
    assert (await get(h, gad7)).status is CheckinStatus.SCHEDULED

    user_id = await clinician(h)
    async with h.db.write() as s:
        await queue.claim(session=s, escalation_id=item.id, user_id=user_id, now=h.clock.now())
    async with h.db.read() as s:
        assert await holds.hold_of(s, p.id) is None
    h.clock.advance(minutes=10)  # past the held row's recheck
    assert (await tick(h)).started == 1
    assert (await get(h, gad7)).status is CheckinStatus.ACTIVE
    assert "nervous" in h.twilio.sent_to(p.phone)[-1]


async def test_releasing_the_claim_puts_the_hold_back_and_resolving_lifts_it(h: Harness) -> None:
    p = await h.patient()
    _gad7, item = await critical_screen(h, p)
    user_id = await clinician(h)
    async with h.db.write() as s:
        await queue.claim(session=s, escalation_id=item.id, user_id=user_id, now=h.clock.now())
    async with h.db.write() as s:
        await queue.release(session=s, escalation_id=item.id, user_id=user_id, is_admin=False)
    async with h.db.read() as s:
        assert await holds.hold_of(s, p.id) is not None
    async with h.db.write() as s:
        await queue.resolve(
            session=s,
            escalation_id=item.id,
            user_id=user_id,
            is_admin=False,
            disposition=Disposition.REACHED_PATIENT,
            note="called, safe with family",
            now=h.clock.now(),
        )
    async with h.db.read() as s:
        assert await holds.hold_of(s, p.id) is None


async def test_a_held_checkin_past_its_window_is_missed_as_held_not_as_silence(
    h: Harness,
) -> None:
    p = await h.patient()
    gad7, _item = await critical_screen(h, p)
    h.clock.set(START + timedelta(days=2))
    result = await tick(h)
    assert result.missed == 1
    row = await get(h, gad7)
    assert (row.status, row.outcome) == (CheckinStatus.MISSED, "held")
    async with h.db.read() as s:
        reasons = (
            await s.scalars(select(Escalation.reason).where(Escalation.patient_id == p.id))
        ).all()
    assert "missed_checkins" not in reasons


async def test_low_and_moderate_items_hold_nothing(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        for severity in (Severity.LOW, Severity.MODERATE):
            s.add(
                Escalation(
                    patient_id=p.id,
                    severity=severity,
                    severity_rank={Severity.LOW: 3, Severity.MODERATE: 2}[severity],
                    reason="test",
                    summary="",
                    created_at=h.clock.now(),
                )
            )
    due = await add_checkin(h, p, "daily_mood", h.clock.now())
    assert (await tick(h)).started == 1
    assert (await get(h, due)).status is CheckinStatus.ACTIVE


async def test_the_item9_handover_runs_through_the_hold_it_causes(h: Harness) -> None:
    """Item 9 positive raises a high item (a hold) and hands over to the C-SSRS, which is
    the safety follow-up and starts at once; the routine check-in behind waits."""
    p = await h.patient()
    phq9 = await add_checkin(h, p, "phq9", START - timedelta(minutes=2))
    gad2 = await add_checkin(h, p, "gad2", START - timedelta(minutes=1))
    assert (await tick(h)).started == 1
    for answer in ("1", "1", "0", "1", "0", "1", "0", "0", "sometimes"):
        await h.sms(p.phone, answer)
    assert (await get(h, phq9)).status is CheckinStatus.COMPLETED
    rows = await h.checkins(p)
    follow = [c for c in rows if c.previous_id == phq9.id]
    assert [c.flow_key for c in follow] == ["cssrs_screen"]
    assert follow[0].status is CheckinStatus.ACTIVE
    assert not holds.routine(follow[0]) and holds.routine(phq9)
    async with h.db.read() as s:
        assert await holds.hold_of(s, p.id) is not None
    for answer in ("no", "no", "no"):
        await h.sms(p.phone, answer)
    assert follow[0].id in [c.id for c in await h.checkins(p)]
    assert (await get(h, follow[0])).status is CheckinStatus.COMPLETED
    assert (await get(h, gad2)).status is CheckinStatus.SCHEDULED


async def test_the_api_and_the_pages_show_the_hold_and_how_it_lifts(h: Harness) -> None:
    p = await h.patient()
    _gad7, item = await critical_screen(h, p)
    token = await h.token()
    headers = {"Authorization": f"Bearer {token}"}
    body = await (await h.client.get(f"/api/v1/patients/{p.id}", headers=headers)).json()
    assert body["risk_hold"]["escalation_id"] == item.id
    assert body["risk_hold"]["severity"] == "critical"
    listed = await (await h.client.get("/api/v1/patients", headers=headers)).json()
    assert [x["risk_hold"]["escalation_id"] for x in listed["items"]] == [item.id]

    await h.login(await h.user())
    page = await (await h.client.get(f"/patients/{p.id}")).text()
    assert "on hold since" in page and f"/escalations/{item.id}" in page
    page = await (await h.client.get(f"/escalations/{item.id}")).text()
    assert "because of this item: any clinician who claims or resolves it lifts the hold" in page
    page = await (await h.client.get("/")).text()
    assert "check-ins on hold" in page

    token = await h.csrf(f"/escalations/{item.id}")
    resp = await h.client.post(
        f"/escalations/{item.id}/claim", data={"csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 303
    body = await (await h.client.get(f"/api/v1/patients/{p.id}", headers=headers)).json()
    assert body["risk_hold"] is None
    page = await (await h.client.get(f"/patients/{p.id}")).text()
    assert "on hold since" not in page
