"""The outbox: fast path, crash recovery, retries, permanent failures, status callbacks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot import ticks
from bot.services import outbox
from bot.services.escalations import raise_escalation
from bot.worker import Tick
from db.enums import Direction, MessageStatus, Severity
from db.models import EarlyStatus, Escalation, Message, Patient
from db.session import Database
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _outbound(h: Harness, patient_id: int) -> list[Message]:
    async with h.db.read() as s:
        return list(
            (
                await s.scalars(
                    select(Message)
                    .where(Message.patient_id == patient_id, Message.direction == Direction.OUT)
                    .order_by(Message.id)
                )
            ).all()
        )


async def test_fast_path_sends_reply_before_any_worker_runs(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    n = len(h.twilio.requests)
    await h.sms(p.phone, "1")
    assert len(h.twilio.requests) == n + 1
    msgs = await _outbound(h, p.id)
    assert msgs[-1].status is MessageStatus.QUEUED
    assert msgs[-1].provider_sid is not None
    req = h.twilio.requests[-1]
    assert req.form["StatusCallback"] == "https://care.example.org/twilio/status"
    assert req.form["From"] == "+12025550199"


async def test_crash_between_commit_and_send_worker_sends_later(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        m = outbox.enqueue(
            session=s,
            phone=p.phone,
            body="hello",
            purpose="info",
            now=h.clock.now(),
            patient_id=p.id,
        )
    # nothing sent it (the process died after commit); the worker tick finds it
    assert h.twilio.requests == []
    assert await h.send_outbox() == 1
    assert h.twilio.sent_to(p.phone) == ["hello"]
    msgs = await _outbound(h, p.id)
    assert msgs[0].id == m.id and msgs[0].status is MessageStatus.QUEUED


async def test_crash_while_sending_lease_expires_then_resent(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        outbox.enqueue(
            session=s,
            phone=p.phone,
            body="hello",
            purpose="info",
            now=h.clock.now(),
            patient_id=p.id,
        )
    async with h.db.write() as s:
        await s.execute(
            update(Message).values(
                status=MessageStatus.SENDING,
                lease_until=h.clock.now() + timedelta(seconds=60),
                attempts=1,
            )
        )
    assert await h.send_outbox() == 0  # leased by the crashed sender
    h.clock.advance(seconds=61)
    assert await h.send_outbox() == 1
    msgs = await _outbound(h, p.id)
    assert msgs[0].attempts == 2 and msgs[0].status is MessageStatus.QUEUED


@pytest.mark.parametrize(
    "failure",
    [("error", 500, None), ("error", 503, None), ("error", 429, 20429), ("hang", 0, None)],
)
async def test_transient_failure_then_success(
    h: Harness, failure: tuple[str, int, int | None]
) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        outbox.enqueue(
            session=s,
            phone=p.phone,
            body="hello",
            purpose="info",
            now=h.clock.now(),
            patient_id=p.id,
        )
    h.twilio.answer_next(*failure)
    assert await h.send_outbox() == 0
    msgs = await _outbound(h, p.id)
    assert msgs[0].status is MessageStatus.PENDING and msgs[0].attempts == 1
    assert msgs[0].send_after == h.clock.now() + outbox.backoff(1)
    # the client itself never retried: exactly one POST so far
    assert len(h.twilio.requests) == 1
    assert await h.send_outbox() == 0  # not due yet
    h.clock.advance(seconds=11)
    assert await h.send_outbox() == 1
    msgs = await _outbound(h, p.id)
    assert msgs[0].status is MessageStatus.QUEUED and msgs[0].attempts == 2


async def test_permanent_failure_marks_failed_then_unreachable(h: Harness) -> None:
    p = await h.patient()
    h.twilio.answer_always("error", 400, 21614)
    for i in range(3):
        async with h.db.write() as s:
            outbox.enqueue(
                session=s,
                phone=p.phone,
                body=f"m{i}",
                purpose="info",
                now=h.clock.now(),
                patient_id=p.id,
            )
        await h.send_outbox()
    msgs = await _outbound(h, p.id)
    assert [m.status for m in msgs] == [MessageStatus.FAILED] * 3
    assert all(m.error_code == 21614 and m.attempts == 1 for m in msgs)
    async with h.db.read() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None and patient.unreachable_at is not None
        esc = (await s.scalars(select(Escalation))).all()
    assert [(e.severity, e.reason) for e in esc] == [(Severity.MODERATE, "unreachable")]


async def test_unsubscribed_error_opts_the_patient_out(h: Harness) -> None:
    p = await h.patient()
    h.twilio.answer_next("error", 400, 21610)
    async with h.db.write() as s:
        outbox.enqueue(
            session=s, phone=p.phone, body="hi", purpose="info", now=h.clock.now(), patient_id=p.id
        )
        outbox.enqueue(
            session=s,
            phone=p.phone,
            body="again",
            purpose="info",
            now=h.clock.now() + timedelta(seconds=1),
            patient_id=p.id,
            send_after=h.clock.now() + timedelta(minutes=1),
        )
    await h.send_outbox()
    h.clock.advance(minutes=2)
    await h.send_outbox()
    assert len(h.twilio.requests) == 1  # the second was cancelled, not sent
    msgs = await _outbound(h, p.id)
    assert [m.status for m in msgs] == [MessageStatus.FAILED, MessageStatus.CANCELLED]
    async with h.db.read() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None and patient.opted_out_at is not None
        items = (await s.scalars(select(Escalation).where(Escalation.patient_id == p.id))).all()
    assert [(e.severity, e.reason) for e in items] == [(Severity.MODERATE, "opted_out")]
    assert "error 21610" in items[0].summary and "phone them" in items[0].summary


async def test_a_carrier_opt_out_soon_after_a_high_item_is_high(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        raise_escalation(
            session=s,
            severity=Severity.HIGH,
            reason="item9_positive",
            summary="",
            now=h.clock.now() - timedelta(hours=71),
            patient_id=p.id,
        )
    h.twilio.answer_next("error", 400, 21610)
    async with h.db.write() as s:
        outbox.enqueue(
            session=s, phone=p.phone, body="hi", purpose="info", now=h.clock.now(), patient_id=p.id
        )
    await h.send_outbox()
    async with h.db.read() as s:
        item = (await s.scalars(select(Escalation).where(Escalation.reason == "opted_out"))).one()
    assert item.severity is Severity.HIGH and "within 72 hours" in item.summary


async def test_status_callbacks_only_move_forward(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        outbox.enqueue(
            session=s, phone=p.phone, body="hi", purpose="info", now=h.clock.now(), patient_id=p.id
        )
    await h.send_outbox()
    sid = (await _outbound(h, p.id))[0].provider_sid
    assert sid is not None
    for status in ["delivered", "sent", "queued"]:  # out of order
        resp = await h.status(sid, status)
        assert resp.status == 200
    msg = (await _outbound(h, p.id))[0]
    assert msg.status is MessageStatus.DELIVERED


async def test_status_callback_records_error_code(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        outbox.enqueue(
            session=s, phone=p.phone, body="hi", purpose="info", now=h.clock.now(), patient_id=p.id
        )
    await h.send_outbox()
    sid = (await _outbound(h, p.id))[0].provider_sid
    assert sid is not None
    await h.status(sid, "sent")
    await h.status(sid, "undelivered", "30006")
    msg = (await _outbound(h, p.id))[0]
    assert msg.status is MessageStatus.UNDELIVERED and msg.error_code == 30006


async def test_transient_delivery_error_is_retried_as_a_new_row(h: Harness) -> None:
    p = await h.patient()
    async with h.db.write() as s:
        outbox.enqueue(
            session=s, phone=p.phone, body="hi", purpose="info", now=h.clock.now(), patient_id=p.id
        )
    await h.send_outbox()
    sid = (await _outbound(h, p.id))[0].provider_sid
    assert sid is not None
    await h.status(sid, "undelivered", "30003")
    h.clock.advance(hours=1)
    assert await h.send_outbox() == 1
    msgs = await _outbound(h, p.id)
    assert [m.status for m in msgs] == [MessageStatus.UNDELIVERED, MessageStatus.QUEUED]
    assert h.twilio.sent_to(p.phone) == ["hi", "hi"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"MessageStatus": "delivered"}, 400),
        ({"MessageSid": "SM1", "MessageStatus": "exploded"}, 400),
        ({"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "abc"}, 400),
        ({"MessageSid": "SMunknown", "MessageStatus": "delivered"}, 200),
    ],
)
async def test_malformed_status_callbacks(h: Harness, params: dict[str, str], status: int) -> None:
    resp = await h.post_form("/twilio/status", params)
    assert resp.status == status


def _statuses_tick(h: Harness) -> Tick:
    [tick] = [t for t in ticks.build_ticks(h.app) if t.name == "statuses"]
    return tick


async def _early(h: Harness) -> list[EarlyStatus]:
    async with h.db.read() as s:
        return list((await s.scalars(select(EarlyStatus).order_by(EarlyStatus.id))).all())


async def test_a_report_that_comes_before_the_send_is_recorded_is_applied_later(
    h: Harness,
) -> None:
    """Twilio can call back between accepting a message and our commit of its sid: the
    reports are kept, not dropped, and the worker applies them once the sid is recorded."""
    p = await h.patient()
    async with h.db.write() as s:
        m = outbox.enqueue(
            session=s, phone=p.phone, body="hi", purpose="info", now=h.clock.now(), patient_id=p.id
        )
        outbox.claim_in_session([m], h.clock.now())
    assert (await _outbound(h, p.id))[0].status is MessageStatus.SENDING
    for status, code in [("sent", None), ("undelivered", "30006")]:
        assert (await h.status("SMearly", status, code)).status == 200
    assert [(e.provider_sid, e.status, e.error_code) for e in await _early(h)] == [
        ("SMearly", MessageStatus.SENT, None),
        ("SMearly", MessageStatus.UNDELIVERED, 30006),
    ]
    assert await _statuses_tick(h).run() == 0  # no message has the sid yet: kept
    assert len(await _early(h)) == 2

    claimed = outbox.claimed_of(await _outbound(h, p.id))
    await outbox._record_successes(h.db, [(claimed[0], "SMearly", "queued")], h.clock.now())
    assert await _statuses_tick(h).run() == 2
    msg = (await _outbound(h, p.id))[0]
    assert (msg.status, msg.error_code) == (MessageStatus.UNDELIVERED, 30006)
    assert await _early(h) == []
    # a report once the sid is known is applied at once, never kept
    assert (await h.status("SMearly", "delivered")).status == 200
    assert await _early(h) == []


async def test_reports_for_a_sid_no_message_gets_are_dropped_after_an_hour(h: Harness) -> None:
    assert (await h.status("SMnever", "delivered")).status == 200
    h.clock.advance(minutes=59)
    assert await _statuses_tick(h).run() == 0
    assert len(await _early(h)) == 1
    h.clock.advance(minutes=2)
    assert await _statuses_tick(h).run() == 0
    assert await _early(h) == []


@pytest.mark.postgres
async def test_two_workers_apply_the_kept_reports_once_without_failing(h: Harness) -> None:
    """Workers tick at once on PostgreSQL: each takes the kept reports no other holds."""
    p = await h.patient()
    async with h.db.write() as s:
        messages = [
            outbox.enqueue(
                session=s,
                phone=p.phone,
                body="hi",
                purpose="info",
                now=h.clock.now(),
                patient_id=p.id,
            )
            for _ in range(20)
        ]
        outbox.claim_in_session(messages, h.clock.now())
    sids = [f"SMearly{i:02d}" for i in range(20)]
    for sid in sids:
        assert (await h.status(sid, "delivered")).status == 200
    claimed = outbox.claimed_of(await _outbound(h, p.id))
    await outbox._record_successes(
        h.db, [(c, sid, "queued") for c, sid in zip(claimed, sids, strict=True)], h.clock.now()
    )
    other = Database(h.db.url)
    try:
        done = await asyncio.gather(
            outbox.apply_early_statuses(h.db, h.clock.now()),
            outbox.apply_early_statuses(other, h.clock.now()),
        )
    finally:
        await other.dispose()
    assert sum(done) == 20
    assert {m.status for m in await _outbound(h, p.id)} == {MessageStatus.DELIVERED}
    assert await _early(h) == []
