"""On-call paging with a controlled clock: who is paged, when, how often, and what the page says."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from bot.services import outbox
from bot.services.accounts import create_token
from bot.services.escalations import raise_escalation
from bot.services.paging import page_due
from db.enums import EscalationStatus, Role, Severity
from db.models import Escalation, Message, Patient, User
from tests.web.harness import PUBLIC_BASE, Harness, harness

CRISIS = "honestly i want to kill myself tonight"


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


@dataclass
class Staff:
    on_call_a: str
    on_call_b: str
    off_call: str
    on_call_no_phone: str
    admin: str
    admin_no_phone: str

    @property
    def phones(self) -> list[str]:
        return [self.on_call_a, self.on_call_b, self.off_call, self.admin]


async def add_user(h: Harness, role: Role, phone: str | None, on_call: bool) -> str:
    email = await h.user(role, phone=phone, on_call=on_call)
    return email


async def rota(h: Harness) -> Staff:
    staff = Staff(
        on_call_a="+12025550301",
        on_call_b="+12025550302",
        off_call="+12025550303",
        on_call_no_phone="",
        admin="+12025550304",
        admin_no_phone="",
    )
    await add_user(h, Role.CLINICIAN, staff.on_call_a, True)
    await add_user(h, Role.CLINICIAN, staff.on_call_b, True)
    await add_user(h, Role.CLINICIAN, staff.off_call, False)
    await add_user(h, Role.CLINICIAN, None, True)
    await add_user(h, Role.ADMIN, staff.admin, False)
    await add_user(h, Role.ADMIN, None, True)
    return staff


def pages_to(h: Harness, phone: str) -> list[str]:
    return [b for b in h.twilio.sent_to(phone) if "alert #" in b]


async def tick(h: Harness) -> int:
    """What the worker's paging tick does: page what is due, then send it."""
    paged, ids = await page_due(h.db, h.settings, h.clock.now())
    if ids:
        await outbox.send(h.db, h.transport, h.clock, ids=ids)
    return paged


async def get(h: Harness, escalation_id: int) -> Escalation:
    async with h.db.read() as s:
        found = await s.get(Escalation, escalation_id)
        assert found is not None
        return found


async def raised(h: Harness, severity: Severity, reason: str = "phq9_severe") -> int:
    async with h.db.write() as s:
        e = raise_escalation(
            session=s,
            severity=severity,
            reason=reason,
            summary="summary with PHI-like text",
            now=h.clock.now(),
            patient_id=None,
        )
        await s.flush()
        return e.id


async def critical_from_crisis_text(h: Harness, first_name: str = "Maya") -> tuple[int, str]:
    p = await h.patient(first_name)
    resp = await h.sms(p.phone, CRISIS)
    assert resp.status == 200
    async with h.db.read() as s:
        e = await s.scalar(
            select(Escalation).where(
                Escalation.patient_id == p.id, Escalation.severity == Severity.CRITICAL
            )
        )
    assert e is not None
    return e.id, p.phone


async def test_critical_pages_every_on_call_clinician_at_once(h: Harness) -> None:
    staff = await rota(h)
    eid, patient_phone = await critical_from_crisis_text(h, "Maya")
    # paged by the webhook's fast path, before any worker tick
    for phone in (staff.on_call_a, staff.on_call_b):
        [body] = pages_to(h, phone)
        assert f"#{eid}" in body
        assert f"{PUBLIC_BASE}/escalations/{eid}" in body
        assert body.startswith("Test Clinic: Critical alert")
        # no PHI: not the patient's name, number or words
        assert "Maya" not in body
        assert patient_phone not in body and patient_phone[2:] not in body
        for word in ("kill", "myself", "tonight"):
            assert word not in body.lower()
        assert re.fullmatch(
            rf"Test Clinic: Critical alert #{eid} - open the queue: "
            rf"{re.escape(PUBLIC_BASE)}/escalations/{eid}",
            body,
        )
    assert pages_to(h, staff.off_call) == []
    assert pages_to(h, staff.admin) == []
    stored = await get(h, eid)
    assert stored.page_count == 1 and stored.last_paged_at == h.clock.now()
    # the pages went through the outbox, addressed to users, not patients
    async with h.db.read() as s:
        rows = (await s.scalars(select(Message).where(Message.purpose == "page"))).all()
        users = dict((await s.execute(select(User.phone, User.id))).all())
    assert sorted(m.phone for m in rows) == sorted([staff.on_call_a, staff.on_call_b])
    assert all(m.patient_id is None for m in rows)
    assert all(m.user_id == users[m.phone] for m in rows)
    # a tick right after pages nothing new
    assert await tick(h) == 0
    assert len(pages_to(h, staff.on_call_a)) == 1


async def test_unclaimed_critical_is_paged_again_after_15_minutes_with_admins(
    h: Harness,
) -> None:
    staff = await rota(h)
    eid, _phone = await critical_from_crisis_text(h)
    h.clock.advance(minutes=14, seconds=59)
    assert await tick(h) == 0
    assert [len(pages_to(h, p)) for p in staff.phones] == [1, 1, 0, 0]
    h.clock.advance(seconds=1)
    assert await tick(h) == 1
    assert [len(pages_to(h, p)) for p in staff.phones] == [2, 2, 0, 1]
    again = pages_to(h, staff.admin)[0]
    assert f"#{eid}" in again and "page 2" in again and "Maya" not in again
    stored = await get(h, eid)
    assert stored.page_count == 2
    # and again 15 minutes later, while nobody claims it
    h.clock.advance(minutes=15)
    assert await tick(h) == 1
    assert [len(pages_to(h, p)) for p in staff.phones] == [3, 3, 0, 2]
    assert (await get(h, eid)).page_count == 3
    # the count shows on the escalation page
    await h.login(await h.user())
    html = await (await h.client.get(f"/escalations/{eid}")).text()
    assert re.search(r"<dt>Pages sent</dt><dd>3\b", html)


async def test_high_escalation_pages_the_on_call_after_60_minutes_unclaimed(h: Harness) -> None:
    staff = await rota(h)
    eid = await raised(h, Severity.HIGH)
    assert await tick(h) == 0
    h.clock.advance(minutes=59)
    assert await tick(h) == 0
    assert all(pages_to(h, p) == [] for p in staff.phones)
    h.clock.advance(minutes=1)
    assert await tick(h) == 1
    for phone in (staff.on_call_a, staff.on_call_b):
        [body] = pages_to(h, phone)
        assert f"High alert #{eid}" in body
    assert pages_to(h, staff.admin) == [] and pages_to(h, staff.off_call) == []
    assert (await get(h, eid)).page_count == 1
    # still unclaimed: paged again on its SLA, to the admins too
    h.clock.advance(hours=3, minutes=59)
    assert await tick(h) == 0
    h.clock.advance(minutes=1)
    assert await tick(h) == 1
    assert (await get(h, eid)).page_count == 2
    assert len(pages_to(h, staff.admin)) == 1


async def test_page_high_after_minutes_sets_when_a_high_escalation_pages(db_url: str) -> None:
    async with harness(db_url, PAGE_HIGH_AFTER_MINUTES="15") as hh:
        staff = await rota(hh)
        await raised(hh, Severity.HIGH)
        hh.clock.advance(minutes=14)
        assert await tick(hh) == 0
        hh.clock.advance(minutes=1)
        assert await tick(hh) == 1
        assert len(pages_to(hh, staff.on_call_a)) == 1


async def _answer_until(h: Harness, phone: str, severity: Severity, replies: list[str]) -> int:
    """Send ``replies`` until an escalation of ``severity`` exists for the sender; its id."""
    for reply in replies:
        assert (await h.sms(phone, reply)).status == 200
        async with h.db.read() as s:
            found = await s.scalar(
                select(Escalation.id)
                .join(Patient, Patient.id == Escalation.patient_id)
                .where(Patient.phone == phone, Escalation.severity == severity)
            )
        if found is not None:
            return int(found)
    raise AssertionError(f"no {severity} escalation after {replies}")


async def test_a_critical_answer_in_a_conversation_pages_at_once(h: Harness) -> None:
    """A reply written by the direct path that raises a critical escalation (C-SSRS Q4
    yes) pages the on-call before any worker tick, like crisis language does."""
    staff = await rota(h)
    p = await h.patient()
    await h.start(p, "cssrs_screen")
    eid = await _answer_until(h, p.phone, Severity.CRITICAL, ["yes"] * 6)
    for phone in (staff.on_call_a, staff.on_call_b):
        [body] = pages_to(h, phone)
        assert f"Critical alert #{eid}" in body
    assert (await get(h, eid)).page_count == 1


async def test_a_high_answer_in_a_conversation_pages_after_60_minutes(h: Harness) -> None:
    """A high escalation from a reply (PHQ-9 item 9) is not paged at once: the webhook
    pages only critical ones; the worker pages it after an hour unclaimed."""
    staff = await rota(h)
    p = await h.patient()
    await h.start(p, "phq9")
    eid = await _answer_until(h, p.phone, Severity.HIGH, ["0"] * 8 + ["2"])
    assert all(pages_to(h, phone) == [] for phone in staff.phones)
    h.clock.advance(minutes=60)
    assert await tick(h) >= 1
    [body] = pages_to(h, staff.on_call_a)
    assert f"High alert #{eid}" in body


@pytest.mark.parametrize("severity", [Severity.MODERATE, Severity.LOW])
async def test_lower_severities_never_page(h: Harness, severity: Severity) -> None:
    staff = await rota(h)
    await raised(h, severity)
    for _ in range(4):
        h.clock.advance(days=1)
        assert await tick(h) == 0
    assert all(pages_to(h, p) == [] for p in staff.phones)


async def _claim(h: Harness, eid: int) -> str:
    email = await h.user()
    async with h.db.write() as s:
        _u, token = await create_token(session=s, email=email, label="t", now=h.clock.now())
    resp = await h.client.post(
        f"/api/v1/escalations/{eid}/claim", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    return token


async def test_a_claimed_escalation_is_never_paged_again(h: Harness) -> None:
    staff = await rota(h)
    eid, _phone = await critical_from_crisis_text(h)
    h.clock.advance(minutes=2)
    await _claim(h, eid)
    for _ in range(6):
        h.clock.advance(minutes=15)
        assert await tick(h) == 0
    assert [len(pages_to(h, p)) for p in staff.phones] == [1, 1, 0, 0]
    stored = await get(h, eid)
    assert stored.page_count == 1 and stored.status is EscalationStatus.CLAIMED


async def test_claimed_before_the_first_page_is_never_paged(h: Harness) -> None:
    staff = await rota(h)
    eid = await raised(h, Severity.CRITICAL, "crisis_language")
    await _claim(h, eid)
    assert await tick(h) == 0
    h.clock.advance(hours=1)
    assert await tick(h) == 0
    assert all(pages_to(h, p) == [] for p in staff.phones)
    assert (await get(h, eid)).page_count == 0


async def test_a_resolved_escalation_is_never_paged_again(h: Harness) -> None:
    staff = await rota(h)
    eid, _phone = await critical_from_crisis_text(h)
    token = await _claim(h, eid)
    resp = await h.client.post(
        f"/api/v1/escalations/{eid}/resolve",
        json={"disposition": "sent_to_emergency_care", "note": "EMS dispatched"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    for _ in range(6):
        h.clock.advance(minutes=15)
        assert await tick(h) == 0
    assert [len(pages_to(h, p)) for p in staff.phones] == [1, 1, 0, 0]
    # resolved without being claimed first: same
    eid2 = await raised(h, Severity.HIGH)
    resp = await h.client.post(
        f"/api/v1/escalations/{eid2}/resolve",
        json={"disposition": "no_action_needed", "note": ""},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    h.clock.advance(hours=5)
    assert await tick(h) == 0
    assert (await get(h, eid2)).page_count == 0


async def test_without_anyone_on_call_the_admins_are_paged(h: Harness) -> None:
    off = "+12025550311"
    admin = "+12025550312"
    await add_user(h, Role.CLINICIAN, off, False)
    await add_user(h, Role.ADMIN, admin, False)
    await add_user(h, Role.CLINICIAN, None, True)  # on call but unreachable
    eid, _phone = await critical_from_crisis_text(h)
    [body] = pages_to(h, admin)
    assert f"Critical alert #{eid}" in body
    assert pages_to(h, off) == []
    assert (await get(h, eid)).page_count == 1


async def test_inactive_users_are_not_paged(h: Harness) -> None:
    staff = await rota(h)
    async with h.db.write() as s:
        user = await s.scalar(select(User).where(User.phone == staff.on_call_b))
        assert user is not None
        user.active = False
    await critical_from_crisis_text(h)
    assert len(pages_to(h, staff.on_call_a)) == 1
    assert pages_to(h, staff.on_call_b) == []


async def test_crisis_from_an_unknown_number_also_pages(h: Harness) -> None:
    staff = await rota(h)
    resp = await h.sms("+12025550999", "I took all my pills")
    assert resp.status == 200
    [body] = pages_to(h, staff.on_call_a)
    assert "pills" not in body and "2025550999" not in body


async def test_when_nobody_can_be_paged_nothing_is_counted_and_it_retries(h: Harness) -> None:
    await add_user(h, Role.CLINICIAN, None, True)
    await add_user(h, Role.ADMIN, None, False)
    eid, _phone = await critical_from_crisis_text(h)
    stored = await get(h, eid)
    assert stored.page_count == 0  # no page went out, so none is counted or shown
    await h.login(await h.user())
    html = await (await h.client.get(f"/escalations/{eid}")).text()
    assert "Pages sent" not in html
    assert await tick(h) == 0  # not retried on every tick
    # someone with a phone comes on call; the next SLA mark pages them
    await add_user(h, Role.CLINICIAN, "+12025550321", True)
    h.clock.advance(minutes=14)
    assert await tick(h) == 0
    h.clock.advance(minutes=1)
    assert await tick(h) == 1
    [body] = pages_to(h, "+12025550321")
    assert f"Critical alert #{eid}" in body
    assert (await get(h, eid)).page_count == 1


async def _page_states(h: Harness, eid: int) -> list[str]:
    async with h.db.read() as s:
        pages = (await s.scalars(select(Message).where(Message.escalation_id == eid))).all()
    return sorted(str(m.status) for m in pages)


async def test_a_page_that_cannot_be_sent_is_retried_and_shown_on_the_escalation(
    h: Harness,
) -> None:
    await rota(h)
    eid = await raised(h, Severity.CRITICAL, "crisis_language")
    # both on-call pages meet a 5xx: the outbox keeps them and tries again later
    h.twilio.answer_next("error", 500)
    h.twilio.answer_next("error", 500)
    assert await tick(h) == 1
    assert await _page_states(h, eid) == ["pending", "pending"]
    await h.login(await h.user(Role.CLINICIAN))
    page = await (await h.client.get(f"/escalations/{eid}")).text()
    assert "Page delivery" in page and "retrying" in page
    h.clock.advance(minutes=5)
    await h.send_outbox()
    assert "pending" not in await _page_states(h, eid)
    page = await (await h.client.get(f"/escalations/{eid}")).text()
    assert "retrying" not in page and "did not reach" not in page


async def test_a_page_that_fails_for_good_says_to_phone_the_on_call(h: Harness) -> None:
    await rota(h)
    eid = await raised(h, Severity.CRITICAL, "crisis_language")
    # 21211: not a valid phone number, a permanent error
    h.twilio.answer_next("error", 400, 21211)
    assert await tick(h) == 1
    assert (await _page_states(h, eid)).count("failed") == 1
    await h.login(await h.user(Role.CLINICIAN))
    page = await (await h.client.get(f"/escalations/{eid}")).text()
    assert "error 21211" in page
    assert "A page did not reach its clinician: phone the on-call." in page
