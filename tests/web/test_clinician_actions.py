"""What a clinician does from the pages: text a patient, hand an alert on, resolve safely,
correct a treatment; notices come from fixed codes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from bot.services import escalations as escalation_service
from db.enums import CheckinStatus, EscalationStatus, Role, Severity
from db.models import AuditEvent, Checkin, Escalation, Message, Patient, Treatment, User
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _post(h: Harness, page: str, path: str, **form: str):  # type: ignore[no-untyped-def]
    token = await h.csrf(page)
    return await h.client.post(path, data={"csrf_token": token, **form}, allow_redirects=False)


async def _escalation(h: Harness, patient: Patient, severity: Severity = Severity.HIGH) -> int:
    async with h.db.write() as s:
        e = escalation_service.raise_escalation(
            session=s,
            severity=severity,
            reason="phq9_severe",
            summary="PHQ-9 22",
            now=h.clock.now(),
            patient_id=patient.id,
        )
        await s.flush()
        return e.id


async def _user_id(h: Harness, email: str) -> int:
    async with h.db.read() as s:
        found = await s.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return found


# -- texting the patient ---------------------------------------------------------------------


async def test_a_clinician_texts_the_patient_from_the_patient_page(h: Harness) -> None:
    p = await h.patient("Maya")
    email = await h.user()
    await h.login(email)
    page = f"/patients/{p.id}"
    resp = await _post(h, page, f"{page}/messages", body="Hi Maya, it's Nia from the clinic.")
    assert resp.status == 303 and resp.headers["Location"] == f"{page}?notice=text_queued"
    await h.drain()
    await h.send_outbox()
    assert "Hi Maya, it's Nia from the clinic." in h.twilio.sent_to(p.phone)
    html = await (await h.client.get(resp.headers["Location"])).text()
    assert "Your text is on its way" in html
    assert "Hi Maya, it&#39;s Nia from the clinic." in html  # in the conversation view
    async with h.db.read() as s:
        event = await s.scalar(select(AuditEvent).where(AuditEvent.action == "patient.text"))
        assert event is not None and event.actor_id == await _user_id(h, email)
        assert "Hi Maya" not in str(event.details)  # the audit keeps no message body


async def test_at_night_the_page_asks_before_sending(h: Harness) -> None:
    p = await h.patient("Sam")
    h.clock.set(datetime(2026, 3, 3, 3, 30, tzinfo=UTC))  # 22:30 in New York
    await h.login(await h.user())
    page = f"/patients/{p.id}"
    resp = await _post(h, page, f"{page}/messages", body="Are you safe tonight?")
    assert resp.status == 200
    html = await resp.text()
    assert "It is night for Sam" in html and "Are you safe tonight?" in html  # kept
    async with h.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 0
    resp = await _post(
        h, page, f"{page}/messages", body="Are you safe tonight?", confirm_night="yes"
    )
    assert resp.status == 303
    async with h.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 1


async def test_no_text_to_a_patient_who_opted_out_and_bad_bodies_are_422(h: Harness) -> None:
    p = await h.patient("Lena")
    await h.login(await h.user())
    page = f"/patients/{p.id}"
    assert (await _post(h, page, f"{page}/messages", body="   ")).status == 422
    assert (await _post(h, page, f"{page}/messages", body="x" * 1601)).status == 422
    await h.sms(p.phone, "STOP")
    resp = await _post(h, page, f"{page}/messages", body="hello")
    assert resp.status == 409
    assert "opted out" in await resp.text()


async def test_the_escalation_page_asks_at_night_and_refuses_after_stop(h: Harness) -> None:
    """Re-showing the page happens after the write ends (on SQLite a second writer inside
    the first would wait forever)."""
    p = await h.patient("Lee")
    eid = await _escalation(h, p)
    await h.login(await h.user())
    page = f"/escalations/{eid}"
    h.clock.set(datetime(2026, 3, 3, 3, 30, tzinfo=UTC))  # 22:30 in New York
    await h.login(await h.user())
    resp = await _post(h, page, f"{page}/text", body="Are you safe tonight?")
    assert resp.status == 200
    html = await resp.text()
    assert "It is night for Lee" in html and "Are you safe tonight?" in html
    await h.sms(p.phone, "STOP")
    resp = await _post(h, page, f"{page}/text", body="Are you safe?", confirm_night="yes")
    assert resp.status in (200, 409, 422)
    assert "Texts cannot reach Lee" in await resp.text() or "opted out" in await resp.text()
    async with h.db.read() as s:
        sent = await s.scalar(
            select(func.count()).select_from(Message).where(Message.purpose == "clinician")
        )
    assert sent == 0


async def test_other_open_alerts_are_listed_most_severe_first(h: Harness) -> None:
    p = await h.patient("Ana")
    first = await _escalation(h, p, Severity.MODERATE)
    await _escalation(h, p, Severity.LOW)
    await _escalation(h, p, Severity.CRITICAL)
    await h.login(await h.user())
    html = await (await h.client.get(f"/escalations/{first}")).text()
    others = html.split("Other open alerts for this patient", 1)[1].split("</ul>", 1)[0]
    assert others.index("sev-critical") < others.index("sev-low")


async def test_deactivating_a_clinician_returns_their_claims_to_the_queue(h: Harness) -> None:
    from bot.services import accounts

    p = await h.patient()
    eid = await _escalation(h, p)
    nurse = await h.user()
    await h.login(nurse)
    await _post(h, f"/escalations/{eid}", f"/escalations/{eid}/claim")
    async with h.db.write() as s:
        user = await s.scalar(select(User).where(User.email == nurse))
        assert user is not None
        await accounts.deactivate(session=s, user=user, change=accounts.Change(now=h.clock.now()))
    async with h.db.read() as s:
        e = await s.get(Escalation, eid)
        assert e is not None and e.status is EscalationStatus.OPEN and e.claimed_by is None


async def test_a_clinician_texts_from_the_escalation_page(h: Harness) -> None:
    p = await h.patient("Ana")
    eid = await _escalation(h, p)
    await h.login(await h.user())
    page = f"/escalations/{eid}"
    assert "Text Ana" in await (await h.client.get(page)).text()
    resp = await _post(h, page, f"{page}/text", body="Calling you in 5 minutes.")
    assert resp.status == 303 and resp.headers["Location"] == f"{page}?notice=text_queued"
    async with h.db.read() as s:
        event = await s.scalar(select(AuditEvent).where(AuditEvent.action == "patient.text"))
        assert event is not None and event.details["escalation_id"] == eid


# -- hand-off ------------------------------------------------------------------------------


async def test_assign_and_take_over_on_the_page(h: Harness) -> None:
    p = await h.patient()
    eid = await _escalation(h, p)
    nia = await h.user()
    dev = await h.user()
    await h.login(nia)
    page = f"/escalations/{eid}"
    await _post(h, page, f"{page}/claim")
    resp = await _post(h, page, f"{page}/assign", user_id=str(await _user_id(h, dev)))
    assert resp.status == 303 and resp.headers["Location"] == f"{page}?notice=assigned"
    async with h.db.read() as s:
        e = await s.get(Escalation, eid)
        assert e is not None and e.claimed_by == await _user_id(h, dev)
    # Nia no longer holds it: she cannot assign it on, but can take it over
    resp = await _post(h, page, f"{page}/assign", user_id=str(await _user_id(h, nia)))
    assert resp.headers["Location"] == f"{page}?error=not_yours"
    html = await (await h.client.get(page)).text()
    assert "Take over" in html
    resp = await _post(h, page, f"{page}/take-over")
    assert resp.headers["Location"] == f"{page}?notice=taken_over"
    async with h.db.read() as s:
        e = await s.get(Escalation, eid)
        assert e is not None and e.claimed_by == await _user_id(h, nia)
        actions = set((await s.scalars(select(AuditEvent.action))).all())
    assert {"escalation.assign", "escalation.take_over"} <= actions


async def test_assigning_to_nobody_or_a_deactivated_user_is_refused(h: Harness) -> None:
    p = await h.patient()
    eid = await _escalation(h, p)
    gone = await h.user()
    async with h.db.write() as s:
        user = await s.scalar(select(User).where(User.email == gone))
        assert user is not None
        user.active = False
    await h.login(await h.user())
    page = f"/escalations/{eid}"
    # an open alert is claimed before it is handed on
    resp = await _post(h, page, f"{page}/assign", user_id=str(await _user_id(h, gone)))
    assert resp.headers["Location"] == f"{page}?error=not_yours"
    await _post(h, page, f"{page}/claim")
    for target in ("", "abc", str(await _user_id(h, gone)), "99999"):
        resp = await _post(h, page, f"{page}/assign", user_id=target)
        assert resp.headers["Location"] == f"{page}?error=choose_clinician", target


async def test_resolving_while_a_safety_check_in_runs_asks_first(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "cssrs_screen")
    eid = await _escalation(h, p)
    await h.login(await h.user())
    page = f"/escalations/{eid}"
    html = await (await h.client.get(page)).text()
    assert "is still running with the patient: resolve anyway" in html
    resp = await _post(h, page, f"{page}/resolve", disposition="reached_patient")
    assert resp.headers["Location"] == f"{page}?error=confirm_running"
    async with h.db.read() as s:
        e = await s.get(Escalation, eid)
        assert e is not None and e.status is not EscalationStatus.RESOLVED
    resp = await _post(
        h, page, f"{page}/resolve", disposition="reached_patient", confirm_running="yes"
    )
    assert resp.headers["Location"] == "/?notice=resolved"
    assert "Escalation resolved." in await (await h.client.get("/?notice=resolved")).text()


# -- treatments --------------------------------------------------------------------------------


async def test_treatments_need_a_past_date_and_can_be_corrected_or_deleted(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user(Role.ADMIN))
    page = f"/patients/{p.id}"
    await _post(h, page, f"{page}/enrollments", protocol="ketamine_induction")
    # no date, or a date in the future: refused with the reason
    resp = await _post(h, page, f"{page}/treatments", kind="ketamine infusion")
    assert resp.status == 422 and "Enter when the treatment was given" in await resp.text()
    resp = await _post(
        h, page, f"{page}/treatments", kind="ketamine infusion", administered_at="2027-03-02T10:00"
    )
    assert resp.status == 422 and "cannot be in the future" in await resp.text()
    resp = await _post(
        h, page, f"{page}/treatments", kind="ketamine infusion", administered_at="2026-03-02T09:00"
    )
    assert resp.status == 303
    async with h.db.read() as s:
        t = await s.scalar(select(Treatment))
        assert t is not None
        planned = (
            await s.scalars(select(Checkin.due_at).where(Checkin.treatment_id == t.id))
        ).all()
    assert planned
    resp = await _post(
        h, page, f"{page}/treatments/{t.id}", kind="esketamine", administered_at="2026-03-01T09:00"
    )
    assert resp.status == 303 and resp.headers["Location"] == f"{page}?notice=treatment_changed"
    async with h.db.read() as s:
        moved = await s.get(Treatment, t.id)
        assert moved is not None and moved.kind == "esketamine"
        replanned = (
            await s.scalars(select(Checkin.due_at).where(Checkin.treatment_id == t.id))
        ).all()
    assert replanned and min(replanned) < min(planned)  # a day earlier
    scheduled = (
        select(func.count())
        .select_from(Checkin)
        .where(Checkin.patient_id == p.id, Checkin.status == CheckinStatus.SCHEDULED)
    )
    async with h.db.read() as s:
        before = await s.scalar(scheduled)
    resp = await _post(h, page, f"{page}/treatments/{t.id}/delete")
    assert resp.headers["Location"] == f"{page}?notice=treatment_deleted"
    async with h.db.read() as s:
        assert await s.get(Treatment, t.id) is None
        after = await s.scalar(scheduled)
        actions = set((await s.scalars(select(AuditEvent.action))).all())
    assert after == (before or 0) - len(replanned)  # its own check-ins went, the rest stay
    assert {"patient.treatment_change", "patient.treatment_delete"} <= actions


async def test_the_check_in_picker_has_titles_and_no_default(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user())
    html = await (await h.client.get(f"/patients/{p.id}")).text()
    picker = re.search(r'<select id="checkin-flow" name="flow" required>(.*?)</select>', html, re.S)
    assert picker
    first = re.search(r"<option ([^>]*)>([^<]*)</option>", picker.group(1))
    assert first and first.group(1) == 'value=""'
    assert ">PHQ-9" in picker.group(1) and ">phq9<" not in picker.group(1)
    page = f"/patients/{p.id}"
    resp = await _post(h, page, f"{page}/checkins", flow="")
    assert resp.status == 422 and "Choose which check-in" in await resp.text()


async def test_notices_come_from_fixed_codes(h: Harness) -> None:
    """A crafted link cannot make a trusted page say anything."""
    p = await h.patient()
    await h.login(await h.user())
    html = await (
        await h.client.get(f"/patients/{p.id}", params={"error": "Call 555-0100 now"})
    ).text()
    assert "Call 555-0100" not in html
    html = await (
        await h.client.get(f"/patients/{p.id}", params={"notice": "checkin_scheduled"})
    ).text()
    assert "Check-in scheduled now" in html


# -- the API -----------------------------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_api_assign_follows_the_claim(h: Harness) -> None:
    p = await h.patient()
    eid = await _escalation(h, p)
    holder = await h.token(Role.CLINICIAN)
    other = await h.token(Role.CLINICIAN)
    target = await h.user()
    target_id = await _user_id(h, target)
    url = f"/api/v1/escalations/{eid}"
    assert (await h.client.post(f"{url}/claim", headers=_bearer(holder))).status == 200
    refused = await h.client.post(
        f"{url}/assign", json={"user_id": target_id}, headers=_bearer(other)
    )
    assert refused.status == 403
    bad = await h.client.post(f"{url}/assign", json={"user_id": 999999}, headers=_bearer(holder))
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "user_id"
    resp = await h.client.post(
        f"{url}/assign", json={"user_id": target_id}, headers=_bearer(holder)
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["claimed_by"] == target_id and body["claimed_by_email"] == target
    admin = await h.token(Role.ADMIN)
    resolve = {"disposition": "reached_patient", "note": ""}
    assert (
        await h.client.post(f"{url}/resolve", json=resolve, headers=_bearer(admin))
    ).status == 200
    done = await h.client.post(f"{url}/assign", json={"user_id": target_id}, headers=_bearer(admin))
    assert done.status == 409


async def test_api_text_to_a_patient(h: Harness) -> None:
    p = await h.patient("Maya")
    token = await h.token(Role.CLINICIAN)
    url = f"/api/v1/patients/{p.id}/messages"
    resp = await h.client.post(url, json={"body": "Hi Maya, it's Nia."}, headers=_bearer(token))
    assert resp.status == 201
    sent = await resp.json()
    assert sent["direction"] == "out" and sent["purpose"] == "clinician"
    await h.drain()
    await h.send_outbox()
    assert "Hi Maya, it's Nia." in h.twilio.sent_to(p.phone)
    listed = await (await h.client.get(url, headers=_bearer(token))).json()
    assert any(m["id"] == sent["id"] for m in listed["items"])
    blank = await h.client.post(url, json={"body": "  "}, headers=_bearer(token))
    assert blank.status == 422 and (await blank.json())["error"]["details"][0]["field"] == "body"
    await h.sms(p.phone, "STOP")
    stopped = await h.client.post(url, json={"body": "hello"}, headers=_bearer(token))
    assert stopped.status == 409 and "opted out" in (await stopped.json())["error"]["message"]
