"""Inbound webhooks through the real app: signatures, malformed input, idempotency, routing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode

import pytest
from multidict import MultiDict
from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement
from twilio.request_validator import RequestValidator

from bot.appkeys import TWILIO_VALIDATOR
from bot.services import dispatch, history
from bot.sms.signature import sign
from bot.web.twilio_hooks import MAX_WEBHOOK_BYTES
from db.enums import CheckinStatus, Direction, EscalationStatus, Severity
from db.models import Answer, Base, Checkin, Escalation, Message, Patient, Score
from tests.web.harness import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE, Harness, harness, new_sid

FORM = "application/x-www-form-urlencoded"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def _params(
    sender: str = "+12025550123", body: str = "hi", sid: str | None = None
) -> dict[str, str]:
    return {
        "MessageSid": sid or new_sid(),
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": "+12025550199",
        "Body": body,
    }


async def _count(h: Harness, model: type[Base], *where: ColumnElement[bool]) -> int:
    async with h.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# -- signatures ------------------------------------------------------------------------------


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


def _sig(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, str]:
    return {
        "X-Twilio-Signature": sign(auth_token=token, url=url, params=params),
        "Content-Type": "application/x-www-form-urlencoded",
    }


SignatureCase = tuple[
    Callable[[dict[str, str]], tuple[str, dict[str, str], str, dict[str, str]]], int
]
SIGNATURE_CASES: dict[str, SignatureCase] = {
    "valid": (lambda p: (PUBLIC_BASE + "/twilio/sms", p, AUTH_TOKEN, p), 200),
    "wrong token": (lambda p: (PUBLIC_BASE + "/twilio/sms", p, "other-token", p), 403),
    "param added after signing": (
        lambda p: (PUBLIC_BASE + "/twilio/sms", p, AUTH_TOKEN, {**p, "Extra": "1"}),
        403,
    ),
    "param removed after signing": (
        lambda p: (
            PUBLIC_BASE + "/twilio/sms",
            p,
            AUTH_TOKEN,
            {k: v for k, v in p.items() if k != "To"},
        ),
        403,
    ),
    "trailing whitespace in a value": (
        lambda p: (PUBLIC_BASE + "/twilio/sms", p, AUTH_TOKEN, {**p, "Body": p["Body"] + " "}),
        403,
    ),
    "signed with :443 in the URL": (
        lambda p: ("https://care.example.org:443/twilio/sms", p, AUTH_TOKEN, p),
        200,
    ),
    "signed for the proxy's internal URL": (
        lambda p: ("http://10.0.0.5:8080/twilio/sms", p, AUTH_TOKEN, p),
        403,
    ),
}


@pytest.mark.parametrize("case", list(SIGNATURE_CASES))
async def test_signature_matrix(h: Harness, case: str) -> None:
    build, expected = SIGNATURE_CASES[case]
    params = _params(body="hello there")
    url, signed_params, token, sent = build(params)
    headers = _sig(url, signed_params, token)
    resp = await h.client.post("/twilio/sms", data=urlencode(sent), headers=headers)
    assert resp.status == expected
    inbound = await _count(h, Message, Message.direction == Direction.IN)
    assert inbound == (1 if expected == 200 else 0)


async def test_missing_signature_header_is_403_and_writes_nothing(h: Harness) -> None:
    resp = await h.client.post(
        "/twilio/sms",
        data=urlencode(_params()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 403
    assert await _count(h, Message) == 0


@pytest.mark.parametrize("forged", ["é" * 28, "x", "", "  ", "\u00ff" + "A" * 27])
async def test_a_forged_signature_of_any_shape_is_403(h: Harness, forged: str) -> None:
    """Not ASCII, too short, blank: refused like any wrong signature, never a 500."""
    params = _params(body="hello")
    resp = await h.client.post(
        "/twilio/sms",
        data=urlencode(params),
        headers={
            "X-Twilio-Signature": forged,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert resp.status == 403
    assert await _count(h, Message) == 0


async def test_status_callback_needs_a_signature_too(h: Harness) -> None:
    resp = await h.client.post(
        "/twilio/status",
        data=urlencode({"MessageSid": "SMx", "MessageStatus": "delivered"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 403


# -- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda p: {k: v for k, v in p.items() if k != "From"}, 400),
        (lambda p: {k: v for k, v in p.items() if k != "MessageSid"}, 400),
        (lambda p: {**p, "From": "not-a-number"}, 400),
        (lambda p: {**p, "From": "whatsapp:+12025550123"}, 400),
        (lambda p: {**p, "MessageSid": "S" * 200}, 400),
        (lambda p: {**p, "Body": "a\x00b"}, 400),
    ],
)
async def test_malformed_inbound_is_400(h: Harness, mutate, status: int) -> None:  # type: ignore[no-untyped-def]
    params = mutate(_params())
    resp = await h.post_form("/twilio/sms", params)
    assert resp.status == status
    assert "Traceback" not in await resp.text()
    assert await _count(h, Message) == 0


async def test_oversize_body_is_413(h: Harness) -> None:
    params = _params(body="x" * (70 * 1024))
    resp = await h.post_form("/twilio/sms", params)
    assert resp.status == 413
    assert await _count(h, Message) == 0


async def test_invalid_utf8_is_rejected(h: Harness) -> None:
    raw = b"MessageSid=SM1&From=%2B12025550123&Body=%FF%FE"
    headers = {
        "X-Twilio-Signature": "x",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    resp = await h.client.post("/twilio/sms", data=raw, headers=headers)
    assert resp.status in (400, 403)
    assert await _count(h, Message) == 0


async def test_oversize_chunked_body_is_413(h: Harness) -> None:
    """No Content-Length to refuse up front: the limit still holds while the body is read."""
    params = _params(body="x" * (70 * 1024))
    body = urlencode(params).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    headers = h.signed("/twilio/sms", params)
    resp = await h.client.post("/twilio/sms", data=chunks(), headers=headers)
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert resp.status == 413
    assert "Traceback" not in await resp.text()
    assert await _count(h, Message) == 0


async def test_a_signed_body_at_the_limit_is_handled(h: Harness) -> None:
    head = _params(body="")
    params = {**head, "Body": "x" * (MAX_WEBHOOK_BYTES - len(urlencode(head)))}
    assert len(urlencode(params)) == MAX_WEBHOOK_BYTES
    resp = await h.post_form("/twilio/sms", params)
    assert resp.status == 200


async def test_every_value_of_a_repeated_key_is_signed(h: Harness) -> None:
    """Twilio signs each value of a repeated key; the last one is the one used."""
    pairs = [*_params(body="first").items(), ("Body", "second")]
    body = urlencode(pairs)
    validator = RequestValidator(AUTH_TOKEN)
    url = PUBLIC_BASE + "/twilio/sms"
    good = validator.compute_signature(url, MultiDict(pairs))
    one_value = validator.compute_signature(url, dict(pairs))
    for sig, status in ((one_value, 403), (good, 200)):
        headers = {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}
        resp = await h.client.post("/twilio/sms", data=body, headers=headers)
        assert resp.status == status
    async with h.db.read() as s:
        assert (await s.scalars(select(Message.body))).all()[0] == "second"


def test_the_validator_is_the_apps_own(h: Harness) -> None:
    assert isinstance(h.app[TWILIO_VALIDATOR], RequestValidator)


@pytest.fixture
async def unsigned(db_url: str):  # type: ignore[no-untyped-def]
    """The demo without an auth token, so no signature check: the body checks answer for
    themselves."""
    async with harness(db_url, demo=True, SMS_TRANSPORT="console", TWILIO_AUTH_TOKEN="") as hh:
        assert not hh.settings.verify_signatures and TWILIO_VALIDATOR not in hh.app
        yield hh


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"MessageSid=SM1&From=%2B12025550123&Body=\xff\xfe", FORM, 400),  # not UTF-8
        (b"MessageSid=SM1&From=%2B12025550123&Body=hi", "text/plain", 400),  # not a form
        (b"MessageSid=SM1&From=%2B12025550123&Body=hi", FORM + "; charset=nope", 400),
        (b"MessageSid=SM1&From=%2B12025550123&Body=a%00b", FORM, 400),  # NUL
        (b"MessageSid=SM1&From=%2B12025550123" + b"&a" * 2000, FORM, 413),  # too many fields
        (b"MessageSid=SM1&From=%2B12025550123&Body=" + b"x" * MAX_WEBHOOK_BYTES, FORM, 413),
        (b"MessageSid=SM1&From=%2B12025550123&Body=hi", FORM + "; charset=utf-8", 200),
    ],
)
async def test_unsigned_bodies_get_clear_answers(
    unsigned: Harness, body: bytes, content_type: str, status: int
) -> None:
    headers = {"Content-Type": content_type}
    resp = await unsigned.client.post("/twilio/sms", data=body, headers=headers)
    text = await resp.text()
    assert resp.status == status, text
    assert "Traceback" not in text
    if status != 200:
        assert resp.content_type == "text/plain" and text.strip()
        assert await _count(unsigned, Message) == 0


async def test_empty_body_field_is_fine(h: Harness) -> None:
    p = await h.patient()
    resp = await h.sms(p.phone, "")
    assert resp.status == 200
    assert await resp.text() == TWIML


# -- idempotency -----------------------------------------------------------------------------


async def test_redelivery_changes_nothing(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    sid = new_sid()
    for _ in range(3):
        resp = await h.sms(p.phone, "1", sid=sid)
        assert resp.status == 200
        assert await resp.text() == TWIML
    assert await _count(h, Message, Message.direction == Direction.IN) == 1
    assert await _count(h, Answer) == 1


async def test_concurrent_duplicate_deliveries(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    params = _params(sender=p.phone, body="2")
    responses = await asyncio.gather(*(h.post_form("/twilio/sms", params) for _ in range(5)))
    await h.drain()
    assert [r.status for r in responses] == [200] * 5
    assert await _count(h, Message, Message.direction == Direction.IN) == 1
    assert await _count(h, Answer) == 1


async def test_three_replies_at_once_are_handled_in_order(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    # Sent one after another but without waiting for the answers in between.
    tasks = []
    for body in ("1", "2", "3"):
        tasks.append(asyncio.create_task(h.post_form("/twilio/sms", _params(p.phone, body))))
        await asyncio.sleep(0)
    responses = await asyncio.gather(*tasks)
    await h.drain()
    assert [r.status for r in responses] == [200, 200, 200]
    async with h.db.read() as s:
        answers = (
            await s.execute(select(Answer.question_key, Answer.value).order_by(Answer.id))
        ).all()
    assert [a.question_key for a in answers] == ["q1", "q2", "q3"]
    assert sorted(a.value for a in answers) == [1, 2, 3]


# -- conversations ---------------------------------------------------------------------------


async def test_whole_phq9_over_http_escalates_and_hands_over(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    for reply in ["3", "3", "3", "2", "nearly every day", "3", "2", "2", "1"]:
        resp = await h.sms(p.phone, reply)
        assert resp.status == 200
    async with h.db.read() as s:
        score = await s.scalar(select(Score).where(Score.patient_id == p.id))
        assert score is not None
        assert score.instrument == "phq9"
        assert score.total == 22
        assert score.band == "severe"
        escalations = (
            await s.scalars(select(Escalation).where(Escalation.patient_id == p.id))
        ).all()
        reasons = {(e.severity, e.reason) for e in escalations}
        assert (Severity.HIGH, "item9_positive") in reasons
        assert (Severity.HIGH, "phq9_severe") in reasons
        assert all(e.status is EscalationStatus.OPEN for e in escalations)
    checkins = await h.checkins(p)
    assert [c.flow_key for c in checkins] == ["phq9", "cssrs_screen"]
    assert checkins[0].status is CheckinStatus.COMPLETED
    assert checkins[1].status is CheckinStatus.ACTIVE
    # the C-SSRS question went out right after PHQ-9 ended
    sent = h.twilio.sent_to(p.phone)
    assert len(sent) >= 11


async def test_unparseable_reply_reasks_with_a_hint(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    before = len(h.twilio.sent_to(p.phone))
    await h.sms(p.phone, "2 or 3")
    sent = h.twilio.sent_to(p.phone)
    assert len(sent) == before + 1
    assert "0 to 3" in sent[-1]
    assert await _count(h, Answer) == 0


# -- keywords --------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["STOP", "stop", "  Stop  ", "UNSUBSCRIBE", "quit", "End"])
async def test_stop_opts_out_and_cancels_everything(h: Harness, word: str) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    sent_before = len(h.twilio.requests)
    await h.sms(p.phone, word)
    async with h.db.read() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None and patient.opted_out_at is not None
        esc = (await s.scalars(select(Escalation).where(Escalation.reason == "opted_out"))).all()
        # PHQ-9 waits on item 1, not a safety question; no recent risk: moderate
        assert len(esc) == 1 and esc[0].severity is Severity.MODERATE
        assert "phone them" in esc[0].summary and "before any answer" in esc[0].summary
    checkins = await h.checkins(p)
    assert [c.status for c in checkins] == [CheckinStatus.CANCELLED]
    assert len(h.twilio.requests) == sent_before  # Twilio confirms STOP itself
    # and nothing more goes out, even a reply
    await h.sms(p.phone, "2")
    assert len(h.twilio.requests) == sent_before


async def test_stop_after_risky_answer_keeps_the_escalation(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    for reply in ["0"] * 8 + ["2"]:
        await h.sms(p.phone, reply)
    await h.sms(p.phone, "STOP")
    async with h.db.read() as s:
        found = {e.reason: e for e in (await s.scalars(select(Escalation))).all()}
    assert "item9_positive" in found
    # within 72 hours of a high item, and in the C-SSRS's first (safety) question
    assert found["opted_out"].severity is Severity.HIGH
    assert "safety question" in found["opted_out"].summary


async def test_stop_in_the_cssrs_carries_the_answers_and_closes_the_checkin(h: Harness) -> None:
    p = await h.patient()
    screen = await h.start(p, "cssrs_screen")
    await h.sms(p.phone, "yes")
    await h.sms(p.phone, "yes")
    await h.sms(p.phone, "PARAR")
    async with h.db.read() as s:
        item = (await s.scalars(select(Escalation).where(Escalation.reason == "opted_out"))).one()
        row = await s.get(Checkin, screen.id)
    assert item.severity is Severity.HIGH and item.checkin_id == screen.id
    assert "wished you were dead" in item.summary and "→ yes" in item.summary
    assert "phone them" in item.summary
    assert row is not None and row.status is CheckinStatus.CANCELLED
    assert row.state is not None and row.state["status"] == "cancelled"
    # the closed check-in is never expired or reminded later
    h.clock.advance(hours=30)
    await dispatch.expire_due(h.db, h.settings, h.clock.now())
    await dispatch.remind_due(h.db, h.settings, h.clock.now())
    async with h.db.read() as s:
        row = await s.get(Checkin, screen.id)
    assert row is not None and (row.status, row.outcome) == (CheckinStatus.CANCELLED, "opted_out")


async def test_an_opt_out_with_nothing_at_risk_is_moderate_and_said_once(h: Harness) -> None:
    p = await h.patient()
    await h.sms(p.phone, "stop")
    await h.sms(p.phone, "start")
    await h.sms(p.phone, "stop")
    async with h.db.read() as s:
        items = (await s.scalars(select(Escalation).where(Escalation.reason == "opted_out"))).all()
    assert [e.severity for e in items] == [Severity.MODERATE]
    assert "SMS can no longer reach them: phone them." in items[0].summary


async def test_start_opts_back_in(h: Harness) -> None:
    p = await h.patient()
    await h.sms(p.phone, "stop")
    await h.sms(p.phone, " Start ")
    async with h.db.read() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None and patient.opted_out_at is None


async def test_yes_opts_back_in_only_when_opted_out(h: Harness) -> None:
    p = await h.patient()
    await h.sms(p.phone, "STOP")
    await h.sms(p.phone, "yes")
    async with h.db.read() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None and patient.opted_out_at is None


@pytest.mark.parametrize("word", ["HELP", "help", " Info "])
async def test_help_answers_without_disturbing_the_conversation(h: Harness, word: str) -> None:
    p = await h.patient()
    c = await h.start(p, "phq9")
    await h.sms(p.phone, word)
    last = h.twilio.sent_to(p.phone)[-1]
    assert "Test Clinic" in last and "+12025550100" in last and "988" in last
    checkins = await h.checkins(p)
    assert checkins[0].id == c.id and checkins[0].status is CheckinStatus.ACTIVE
    await h.sms(p.phone, "1")
    assert await _count(h, Answer) == 1


# -- safety ----------------------------------------------------------------------------------


async def test_crisis_in_conversation_escalates_critical_and_replies(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    await h.sms(p.phone, "1")
    await h.sms(p.phone, "honestly i want to kill myself")
    async with h.db.read() as s:
        esc = (
            await s.scalars(select(Escalation).where(Escalation.severity == Severity.CRITICAL))
        ).all()
    assert len(esc) == 1 and esc[0].patient_id == p.id
    assert "988" in h.twilio.sent_to(p.phone)[-1]
    checkins = await h.checkins(p)
    assert checkins[0].status is CheckinStatus.COMPLETED
    assert checkins[0].outcome == "crisis"


async def test_crisis_from_unknown_number_gets_resources_and_no_phi(h: Harness) -> None:
    await h.patient("Maya", phone="+12025550150")
    await h.sms("+12025550777", "I took all my pills")
    reply = h.twilio.sent_to("+12025550777")
    assert len(reply) == 1 and "988" in reply[0] and "Maya" not in reply[0]
    async with h.db.read() as s:
        esc = (await s.scalars(select(Escalation))).all()
    assert len(esc) == 1 and esc[0].severity is Severity.CRITICAL and esc[0].patient_id is None
    assert esc[0].message_id is not None


async def test_crisis_from_opted_out_patient_still_answered(h: Harness) -> None:
    p = await h.patient()
    await h.sms(p.phone, "STOP")
    await h.sms(p.phone, "i want to die")
    assert "988" in h.twilio.sent_to(p.phone)[-1]
    async with h.db.read() as s:
        crit = await s.scalar(
            select(func.count())
            .select_from(Escalation)
            .where(Escalation.severity == Severity.CRITICAL)
        )
    assert crit == 1


# -- routing ---------------------------------------------------------------------------------


async def test_unknown_sender_gets_one_short_reply(h: Harness) -> None:
    await h.sms("+12025550888", "hello?")
    await h.sms("+12025550888", "anyone?")
    replies = h.twilio.sent_to("+12025550888")
    assert len(replies) == 1
    assert "+12025550100" in replies[0]
    assert await _count(h, Message, Message.direction == Direction.IN) == 2


async def test_every_message_outside_a_checkin_is_an_item_and_acknowledged_once(
    h: Harness,
) -> None:
    p = await h.patient()
    await h.sms(p.phone, "feeling a bit off today")
    await h.sms(p.phone, "just wanted to say")
    [ack] = h.twilio.sent_to(p.phone)
    assert "during clinic hours" in ack and "988" in ack and "911" in ack
    async with h.db.read() as s:
        esc = (await s.scalars(select(Escalation).order_by(Escalation.id))).all()
    assert [(e.severity, e.reason) for e in esc] == [(Severity.LOW, "patient_message")] * 2
    assert len({e.message_id for e in esc}) == 2, "each text is its own item"


async def test_the_acknowledgement_states_the_clinic_hours(db_url: str) -> None:
    async with harness(db_url, CLINIC_HOURS="Mon-Fri 08:00-18:00") as hh:
        p = await hh.patient(language="es")
        await hh.sms(p.phone, "hola, una pregunta")
        [ack] = hh.twilio.sent_to(p.phone)
        assert "(Mon-Fri 08:00-18:00)" in ack and "911" in ack


async def test_an_escalation_outside_a_check_in_shows_the_senders_own_texts(h: Harness) -> None:
    """The texts around the one that raised it: a patient's by patient, an unknown number's
    among the texts with no patient, never another sender's."""
    p = await h.patient()
    other = await h.patient("Sam")
    await h.sms(other.phone, "unrelated")
    await h.sms(p.phone, "feeling a bit off today")
    await h.sms("+12025550777", "hello?")
    await h.sms("+12025550777", "I took all my pills")
    async with h.db.read() as s:
        esc = {e.patient_id: e.id for e in (await s.scalars(select(Escalation))).all()}
    for patient_id, texts in [
        (p.id, ["feeling a bit off today", None]),  # the acknowledgement follows
        (None, ["hello?", None, "I took all my pills", None]),
    ]:
        async with h.db.read() as s:
            view = await history.escalation_view(session=s, escalation_id=esc[patient_id])
        assert view is not None
        bodies = [m.body if m.direction is Direction.IN else None for m in view.messages]
        assert bodies == texts, patient_id


async def test_a_pause_by_staff_in_the_cssrs_is_a_high_item_and_a_discharge_none(
    h: Harness,
) -> None:
    from bot.services import patients as patient_service
    from db.enums import PatientStatus

    p = await h.patient()
    await h.start(p, "cssrs_screen")
    await h.sms(p.phone, "yes")
    async with h.db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        await patient_service.set_status(
            session=s, patient=patient, status=PatientStatus.PAUSED, now=h.clock.now()
        )
    other = await h.patient("Ana")
    async with h.db.write() as s:
        patient = await s.get(Patient, other.id)
        assert patient is not None
        await patient_service.set_status(
            session=s, patient=patient, status=PatientStatus.DISCHARGED, now=h.clock.now()
        )
    async with h.db.read() as s:
        items = (await s.scalars(select(Escalation).where(Escalation.reason == "opted_out"))).all()
    assert [(e.patient_id, e.severity) for e in items] == [(p.id, Severity.HIGH)]
    assert "paused by staff" in items[0].summary and "→ yes" in items[0].summary


@pytest.mark.parametrize("path", ["/twilio/sms", "/twilio/status"])
async def test_without_an_auth_token_outside_the_demo_webhooks_are_refused(
    db_url: str, path: str
) -> None:
    async with harness(db_url, SMS_TRANSPORT="console", TWILIO_AUTH_TOKEN="") as hh:
        p = await hh.patient()
        body = urlencode(
            {"MessageSid": new_sid(), "From": p.phone, "Body": "i want to kill myself"}
        )
        resp = await hh.client.post(path, data=body, headers={"Content-Type": FORM})
        assert resp.status == 403
        assert "TWILIO_AUTH_TOKEN is not set" in await resp.text()
        assert await _count(hh, Message) == 0
        assert await _count(hh, Escalation) == 0
