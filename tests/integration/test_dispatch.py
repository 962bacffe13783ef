"""The worker's check-in jobs driven by a frozen clock, on SQLite and PostgreSQL.

The harness patient lives in New York with quiet hours 21:00-08:00; the clock
starts on Monday 2 March 2026 at 15:00 UTC (10:00 EST).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import cast

import pytest
from sqlalchemy import func, select, update

from bot import ticks
from bot.services import conversations, dispatch
from bot.settings import Settings
from db.enums import CheckinStatus, Direction, MessageStatus, Severity
from db.models import Answer, Checkin, Escalation, Message, Patient, Score
from tests.web.harness import START, Harness, harness

DAILY_MOOD_Q = "Hi Maya, this is Test Clinic. How is your mood today, from 0 (worst) to 10 (best)?"
GAD2_Q1_START = "Hi Maya, this is Test Clinic. Over the last 2 weeks"


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    async with harness(db_url) as hh:
        yield hh


async def add_checkin(
    h: Harness,
    patient: Patient,
    flow: str,
    due: datetime,
    *,
    expires: datetime | None = None,
    reminder_s: int | None = 4 * 3600,
    expiry_s: int = 24 * 3600,
) -> Checkin:
    async with h.db.write() as s:
        c = Checkin(
            patient_id=patient.id,
            flow_key=flow,
            status=CheckinStatus.SCHEDULED,
            due_at=due,
            reminder_after_s=reminder_s,
            expiry_after_s=expiry_s,
            expires_at=expires if expires is not None else due + timedelta(seconds=expiry_s),
            created_at=due,
        )
        s.add(c)
    return c


async def get(h: Harness, checkin: Checkin) -> Checkin:
    async with h.db.read() as s:
        found = await s.get(Checkin, checkin.id)
        assert found is not None
        return found


async def outbound(
    h: Harness, *, checkin: Checkin | None = None, patient: Patient | None = None
) -> list[Message]:
    async with h.db.read() as s:
        q = select(Message).where(Message.direction == Direction.OUT).order_by(Message.id)
        if checkin is not None:
            q = q.where(Message.checkin_id == checkin.id)
        if patient is not None:
            q = q.where(Message.patient_id == patient.id)
        return list((await s.scalars(q)).all())


async def escalations(h: Harness, patient: Patient, reason: str) -> list[Escalation]:
    async with h.db.read() as s:
        return list(
            (
                await s.scalars(
                    select(Escalation).where(
                        Escalation.patient_id == patient.id, Escalation.reason == reason
                    )
                )
            ).all()
        )


async def tick(h: Harness) -> dispatch.TickResult:
    """One dispatch tick at the clock's time, then the outbox."""
    result = await dispatch.start_due(h.db, h.settings, h.clock.now())
    await h.send_outbox()
    return result


async def start_now(h: Harness, patient: Patient, flow: str) -> Checkin:
    c = await add_checkin(h, patient, flow, h.clock.now())
    assert (await tick(h)).started == 1
    return await get(h, c)


async def test_start_due_starts_a_due_checkin_once_with_its_first_message(h: Harness) -> None:
    p = await h.patient()
    other = await h.patient("Ben")
    c = await add_checkin(h, p, "phq9", START - timedelta(minutes=1))
    later = await add_checkin(h, other, "daily_mood", START + timedelta(minutes=1))

    result = await dispatch.start_due(h.db, h.settings, START)
    assert (result.started, result.waiting, result.failed) == (1, 0, 0)
    row = await get(h, c)
    assert row.status is CheckinStatus.ACTIVE
    assert row.flow_version == 1
    assert row.state is not None and row.lease_until is None
    assert row.started_at == START
    assert row.reminder_at == START + timedelta(hours=4)
    assert row.expires_at == START + timedelta(hours=24)
    msgs = await outbound(h, checkin=c)
    assert [(m.purpose, m.status) for m in msgs] == [
        ("info", MessageStatus.PENDING),
        ("question", MessageStatus.PENDING),
    ]
    assert sorted(result.outbound_ids) == [m.id for m in msgs]
    assert (await get(h, later)).status is CheckinStatus.SCHEDULED

    assert await h.send_outbox() == 2
    assert h.twilio.sent_to(p.phone)[1].startswith("1/9 Little interest")
    # a second tick at the same instant changes nothing
    again = await dispatch.start_due(h.db, h.settings, START)
    assert again.handled == 0
    assert len(await outbound(h, checkin=c)) == 2
    assert h.twilio.sent_to(other.phone) == []


async def test_a_checkin_cancelled_after_its_claim_is_not_started(h: Harness) -> None:
    """The batch re-reads its claimed rows under lock and starts only those still scheduled
    (a pause or an opt-out can cancel a row between the claim and the batch)."""
    p = await h.patient()
    other = await h.patient("Ben")
    gone = await add_checkin(h, p, "phq9", START - timedelta(minutes=1))
    kept = await add_checkin(h, other, "daily_mood", START - timedelta(minutes=1))
    claim = dispatch.claim_due

    async def claim_then_cancel(*args: object, **kwargs: object) -> list[int]:
        ids = await claim(*args, **kwargs)  # type: ignore[arg-type]
        async with h.db.write() as s:
            await s.execute(
                update(Checkin)
                .where(Checkin.id == gone.id)
                .values(status=CheckinStatus.CANCELLED, lease_until=None)
            )
        return ids

    dispatch.claim_due = claim_then_cancel
    try:
        result = await dispatch.start_due(h.db, h.settings, START)
    finally:
        dispatch.claim_due = claim
    assert (result.claimed, result.started, result.failed) == (2, 1, 0)
    assert (await get(h, gone)).status is CheckinStatus.CANCELLED
    assert await outbound(h, checkin=gone) == []
    assert (await get(h, kept)).status is CheckinStatus.ACTIVE


async def test_one_dispatch_tick_drains_a_backlog_batch_after_batch(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full batch means more is due: the tick takes the next one at once instead of leaving
    a morning's check-ins 5 s apart per batch; one patient's second check-in still waits."""
    monkeypatch.setattr(ticks, "BATCH", 2)
    patients = [await h.patient(f"P{i}") for i in range(5)]
    due = [
        await add_checkin(h, p, "daily_mood", START - timedelta(minutes=i))
        for i, p in enumerate(patients)
    ]
    second = await add_checkin(h, patients[0], "daily_mood", START)
    [dispatch_tick] = [t for t in ticks.build_ticks(h.app) if t.name == "dispatch"]

    assert await dispatch_tick.run() == 5  # started; the sixth waits behind its patient's first
    for c in due:
        row = await get(h, c)
        assert row.status is CheckinStatus.ACTIVE
        # sent by the tick itself (the harness transport is the fake Twilio: "queued")
        assert [m.status for m in await outbound(h, checkin=c)] == [MessageStatus.QUEUED]
    waiting = await get(h, second)
    assert waiting.status is CheckinStatus.SCHEDULED
    assert waiting.lease_until == START + dispatch.BUSY_RECHECK
    assert await dispatch_tick.run() == 0  # nothing claimable: no spinning on the waiting row


async def test_a_failing_dispatch_lane_stops_the_others_with_it(h: Harness) -> None:
    """The tick's lanes run in a task group: an error ends the whole drain, no lane is left
    running past the tick (a second tick could otherwise overlap it)."""
    patients = [await h.patient(f"L{i}") for i in range(4)]
    for p in patients:
        await add_checkin(h, p, "daily_mood", START - timedelta(minutes=1))
    before = asyncio.all_tasks()

    async def fail(_result: dispatch.TickResult) -> None:
        raise RuntimeError("sending failed")

    with pytest.raises(ExceptionGroup) as caught:
        await dispatch.drain_due(
            h.db, h.settings, lambda: START, limit=1, lanes=2, budget_s=10, after_batch=fail
        )
    assert all(isinstance(e, RuntimeError) for e in caught.value.exceptions)
    assert asyncio.all_tasks() == before
    # what the finished batch started stays started; the rest is still due
    statuses = sorted([(await get(h, c)).status for c in await _checkins_of(h, patients)])
    assert CheckinStatus.ACTIVE in statuses and CheckinStatus.SCHEDULED in statuses


async def _checkins_of(h: Harness, patients: list[Patient]) -> list[Checkin]:
    async with h.db.read() as s:
        return list(
            (
                await s.scalars(
                    select(Checkin).where(Checkin.patient_id.in_([p.id for p in patients]))
                )
            ).all()
        )


async def test_concurrent_batches_never_start_two_conversations_for_one_patient(
    h: Harness,
) -> None:
    """Two batches (two workers, or one worker's lanes) each claim one of a patient's due
    check-ins: the patient lock makes the second see the first's start and wait."""
    for round_ in range(4):
        p = await h.patient(f"R{round_}")
        pair = [await add_checkin(h, p, "daily_mood", START - timedelta(minutes=m)) for m in (2, 1)]
        results = await asyncio.gather(
            dispatch.start_due(h.db, h.settings, START, limit=1),
            dispatch.start_due(h.db, h.settings, START, limit=1),
        )
        assert sorted((r.started, r.waiting) for r in results) == [(0, 1), (1, 0)], round_
        statuses = sorted([(await get(h, c)).status for c in pair])
        assert statuses == [CheckinStatus.ACTIVE, CheckinStatus.SCHEDULED], round_
        async with h.db.write() as s:  # end it, so the next round's patient is alone
            await s.execute(
                update(Checkin)
                .where(Checkin.patient_id == p.id)
                .values(status=CheckinStatus.COMPLETED, lease_until=None)
            )


async def test_a_stop_during_a_batch_waits_for_it_instead_of_deadlocking(h: Harness) -> None:
    """A batch locks its patients before their check-ins, in the inbound handler's order: a
    STOP (patient locked, then the pending check-ins cancelled) that arrives while a batch
    holds the patient waits for the batch and then cancels what it started. In the other
    order each would wait for the other until PostgreSQL broke the deadlock."""
    p = await h.patient()
    await h.start(p, "daily_mood")  # the active one: STOP ends it as well
    due = await add_checkin(h, p, "phq9", START - timedelta(minutes=1))
    locked, stop_sent = asyncio.Event(), asyncio.Event()
    lock_patients = dispatch._lock_patients

    async def slow_lock(*args: object, **kwargs: object) -> object:
        # the batch has read its claimed rows and is about to lock their patients
        locked.set()
        await stop_sent.wait()
        await asyncio.sleep(0.3)  # the STOP has the patient and wants the check-ins
        return await lock_patients(*args, **kwargs)  # type: ignore[arg-type]

    async def stop() -> int:
        await locked.wait()
        task = asyncio.ensure_future(h.sms(p.phone, "STOP"))
        await asyncio.sleep(0.05)
        stop_sent.set()
        return (await task).status

    dispatch._lock_patients = slow_lock  # type: ignore[assignment]
    try:
        result, status = await asyncio.wait_for(
            asyncio.gather(dispatch.start_due(h.db, h.settings, START), stop()), 20
        )
    finally:
        dispatch._lock_patients = lock_patients
    assert status == 200
    assert (result.claimed, result.failed, result.started) == (1, 0, 0)
    assert (await get(h, due)).status is CheckinStatus.CANCELLED
    async with h.db.read() as s:
        assert (await s.get(Patient, p.id)).opted_out_at is not None  # type: ignore[union-attr]


async def test_checkin_due_in_quiet_hours_waits_for_the_window_end(h: Harness) -> None:
    p = await h.patient()
    # due 02:30 EST Tuesday (materialised before the patient's quiet hours changed, say)
    c = await add_checkin(h, p, "daily_mood", utc(3, 3, 7, 30), expires=utc(3, 4, 7, 30))
    h.clock.set(utc(3, 3, 8))  # 03:00 local
    result = await tick(h)
    assert (result.started, result.deferred) == (0, 1)
    row = await get(h, c)
    assert row.status is CheckinStatus.SCHEDULED
    assert row.due_at == utc(3, 3, 13)  # 08:00 EST
    assert row.lease_until is None
    h.clock.set(utc(3, 3, 12, 59))
    assert (await tick(h)).handled == 0
    assert h.twilio.sent_to(p.phone) == []
    h.clock.set(utc(3, 3, 13))
    assert (await tick(h)).started == 1
    assert h.twilio.sent_to(p.phone) == [DAILY_MOOD_Q]
    assert [m.created_at for m in await outbound(h, checkin=c)] == [utc(3, 3, 13)]


async def test_one_reminder_after_the_window(h: Harness) -> None:
    p = await h.patient()
    c = await start_now(h, p, "daily_mood")
    h.clock.set(START + timedelta(hours=4) - timedelta(seconds=1))
    assert (await dispatch.remind_due(h.db, h.settings, h.clock.now())).reminded == 0
    h.clock.set(START + timedelta(hours=4))
    result = await dispatch.remind_due(h.db, h.settings, h.clock.now())
    assert result.reminded == 1
    await h.send_outbox()
    assert h.twilio.sent_to(p.phone) == [DAILY_MOOD_Q, "Test Clinic reminder: " + DAILY_MOOD_Q]
    assert (await get(h, c)).reminder_sent_at == START + timedelta(hours=4)
    for hours in (1, 5, 12):
        h.clock.set(START + timedelta(hours=4 + hours))
        assert (await dispatch.remind_due(h.db, h.settings, h.clock.now())).reminded == 0
    assert [m.purpose for m in await outbound(h, checkin=c)] == ["question", "reminder"]


async def test_reminder_that_would_fall_in_quiet_hours_waits_until_morning(h: Harness) -> None:
    p = await h.patient()
    h.clock.set(utc(3, 2, 23, 30))  # 18:30 EST: +4h is 22:30, inside quiet hours
    c = await start_now(h, p, "daily_mood")
    assert c.reminder_at == utc(3, 3, 13)  # 08:00 EST
    assert c.expires_at == utc(3, 3, 23, 30)
    for at in (utc(3, 3, 3, 30), utc(3, 3, 8), utc(3, 3, 12, 59)):
        h.clock.set(at)
        assert (await dispatch.remind_due(h.db, h.settings, at)).reminded == 0
    h.clock.set(utc(3, 3, 13))
    assert (await dispatch.remind_due(h.db, h.settings, h.clock.now())).reminded == 1


async def test_reminder_due_inside_quiet_hours_is_deferred_by_the_job(h: Harness) -> None:
    p = await h.patient()
    c = await start_now(h, p, "daily_mood")
    # a reminder time inside quiet hours (the patient's quiet hours changed after the start)
    async with h.db.write() as s:
        await s.execute(update(Checkin).where(Checkin.id == c.id).values(reminder_at=utc(3, 3, 7)))
    h.clock.set(utc(3, 3, 7, 5))  # 02:05 EST
    result = await dispatch.remind_due(h.db, h.settings, h.clock.now())
    assert (result.reminded, result.deferred) == (0, 1)
    assert (await get(h, c)).reminder_at == utc(3, 3, 13)
    assert [m.purpose for m in await outbound(h, checkin=c)] == ["question"]
    h.clock.set(utc(3, 3, 13))
    assert (await dispatch.remind_due(h.db, h.settings, h.clock.now())).reminded == 1


async def test_expiry_keeps_answers_and_scores_where_the_missing_rule_allows(
    h: Harness,
) -> None:
    p = await h.patient()
    q = await h.patient("Quinn")
    phq9 = await start_now(h, p, "phq9")
    gad2 = await start_now(h, q, "gad2")
    for _ in range(8):
        await h.sms(p.phone, "1")
    await h.sms(q.phone, "1")
    h.clock.set(START + timedelta(hours=24) - timedelta(seconds=1))
    assert (await dispatch.expire_due(h.db, h.settings, h.clock.now())).expired == 0
    h.clock.set(START + timedelta(hours=24))
    result = await dispatch.expire_due(h.db, h.settings, h.clock.now())
    assert result.expired == 2
    async with h.db.read() as s:
        for c, answers in ((phq9, 8), (gad2, 1)):
            row = await s.get(Checkin, c.id)
            assert row is not None
            assert (row.status, row.outcome, row.completed_at) == (
                CheckinStatus.EXPIRED,
                "expired",
                h.clock.now(),
            )
            n = await s.scalar(select(func.count()).where(Answer.checkin_id == c.id))
            assert n == answers
        scores = (await s.scalars(select(Score).order_by(Score.id))).all()
    # PHQ-9 allows one missing item (prorated: 8 x 9/8); GAD-2 allows none
    assert [(sc.checkin_id, sc.instrument, sc.total, sc.complete) for sc in scores] == [
        (phq9.id, "phq9", 9.0, False)
    ]
    # it expired waiting on item 9, a safety question: unanswered is escalated as high
    [item9] = await escalations(h, p, "item9_unanswered")
    assert item9.severity is Severity.HIGH
    assert (await dispatch.expire_due(h.db, h.settings, h.clock.now())).expired == 0


async def test_a_reply_during_its_expiry_waits_for_it_instead_of_deadlocking(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry job holds the check-in and then writes rows that refer to the patient
    (its score, an escalation); a reply that arrived meanwhile holds the patient and waits
    for the check-in. The reply's patient lock lets those references through (FOR NO KEY
    UPDATE), so the expiry commits and the reply is then recorded as a late one; with a
    FOR UPDATE lock each waited for the other until PostgreSQL broke the deadlock."""
    p = await h.patient()
    phq9 = await start_now(h, p, "phq9")
    for _ in range(8):
        await h.sms(p.phone, "1")
    h.clock.set(START + timedelta(hours=24))
    holding, reply_sent = asyncio.Event(), asyncio.Event()
    resume = conversations.resume_checkin

    async def slow_resume(**kwargs: object) -> object:
        holding.set()  # the expiry job holds the check-in
        await reply_sent.wait()
        await asyncio.sleep(0.3)  # the reply holds the patient and waits for the check-in
        return await resume(**kwargs)  # type: ignore[arg-type]

    async def reply() -> int:
        await holding.wait()
        task = asyncio.ensure_future(h.sms(p.phone, "2"))
        await asyncio.sleep(0.05)
        reply_sent.set()
        return (await task).status

    monkeypatch.setattr(dispatch, "resume_checkin", slow_resume)
    result, status = await asyncio.wait_for(
        asyncio.gather(dispatch.expire_due(h.db, h.settings, h.clock.now()), reply()), 20
    )
    assert status == 200
    assert (result.expired, result.failed) == (1, 0)
    assert (await get(h, phq9)).status is CheckinStatus.EXPIRED


async def _expire(h: Harness, c: Checkin) -> None:
    row = await get(h, c)
    assert row.expires_at is not None
    h.clock.set(row.expires_at)
    assert (await dispatch.expire_due(h.db, h.settings, h.clock.now())).expired == 1


async def test_two_silent_checkins_in_a_row_escalate_once(h: Harness) -> None:
    p = await h.patient()
    first = await start_now(h, p, "daily_mood")
    await _expire(h, first)
    assert await escalations(h, p, "not_responding") == []
    h.clock.set(utc(3, 4, 15))
    second = await start_now(h, p, "daily_mood")
    await _expire(h, second)
    [esc] = await escalations(h, p, "not_responding")
    assert esc.severity is Severity.MODERATE
    assert esc.created_at == h.clock.now()
    # a third, missed outright (worker down past its window), adds nothing while it is open
    third = await add_checkin(h, p, "daily_mood", utc(3, 6, 15), expires=utc(3, 7, 15))
    h.clock.set(utc(3, 7, 16))
    assert (await tick(h)).missed == 1
    assert (await get(h, third)).status is CheckinStatus.MISSED
    assert len(await escalations(h, p, "not_responding")) == 1


async def test_an_answered_checkin_breaks_the_silent_streak(h: Harness) -> None:
    p = await h.patient()
    await _expire(h, await start_now(h, p, "daily_mood"))
    h.clock.set(utc(3, 4, 15))
    await start_now(h, p, "daily_mood")
    await h.sms(p.phone, "6")
    h.clock.set(utc(3, 5, 15))
    await _expire(h, await start_now(h, p, "daily_mood"))
    assert await escalations(h, p, "not_responding") == []


async def test_one_at_a_time_the_waiting_checkin_starts_when_the_first_completes(
    h: Harness,
) -> None:
    p = await h.patient()
    first = await add_checkin(h, p, "daily_mood", START - timedelta(minutes=2))
    second = await add_checkin(h, p, "gad2", START - timedelta(minutes=1))
    result = await tick(h)
    assert (result.started, result.waiting) == (1, 1)
    assert (await get(h, first)).status is CheckinStatus.ACTIVE
    waiting = await get(h, second)
    assert waiting.status is CheckinStatus.SCHEDULED and waiting.state is None
    assert h.twilio.sent_to(p.phone) == [DAILY_MOOD_Q]
    # more ticks while the first is active never start the second
    h.clock.advance(minutes=10)
    assert (await tick(h)).started == 0
    h.clock.advance(minutes=10)
    await h.sms(p.phone, "7")  # completes daily_mood; the second starts at once
    assert (await get(h, first)).status is CheckinStatus.COMPLETED
    started = await get(h, second)
    assert started.status is CheckinStatus.ACTIVE
    assert started.started_at == h.clock.now()
    sent = h.twilio.sent_to(p.phone)
    assert len(sent) == 3 and sent[2].startswith(GAD2_Q1_START)
    assert (await tick(h)).handled == 0
    assert len(await outbound(h, checkin=second)) == 1


async def test_one_at_a_time_a_waiting_checkin_whose_window_passed_is_missed(
    h: Harness,
) -> None:
    p = await h.patient()
    first = await add_checkin(h, p, "daily_mood", START)
    stale = await add_checkin(h, p, "gad2", START, expires=START + timedelta(hours=1))
    fresh = await add_checkin(h, p, "phq2", START + timedelta(minutes=1))
    h.clock.advance(minutes=1)
    assert (await tick(h)).waiting == 2
    h.clock.set(START + timedelta(hours=2))
    await h.sms(p.phone, "8")
    assert (await get(h, first)).status is CheckinStatus.COMPLETED
    # the stale one is never sent; the next one still inside its window starts at once
    assert (await get(h, stale)).status is CheckinStatus.SCHEDULED
    assert (await get(h, fresh)).status is CheckinStatus.ACTIVE
    assert await outbound(h, checkin=stale) == []
    result = await tick(h)
    assert (result.missed, result.started) == (1, 0)
    row = await get(h, stale)
    assert (row.status, row.outcome, row.completed_at) == (
        CheckinStatus.MISSED,
        "missed",
        h.clock.now(),
    )


async def test_downtime_catch_up_sends_what_is_in_window_and_marks_the_rest_missed(
    h: Harness,
) -> None:
    quiet = await h.patient("Quiet")
    gone = await h.patient("Gone")
    night_owl = await h.patient("Owl")
    async with h.db.write() as s:
        owl = await s.get(Patient, night_owl.id)
        assert owl is not None
        owl.quiet_start = owl.quiet_end = None
    in_window = await add_checkin(h, quiet, "daily_mood", utc(3, 2, 15, 30))
    past_window = await add_checkin(
        h, gone, "daily_mood", utc(3, 2, 16), expires=utc(3, 2, 20), expiry_s=4 * 3600
    )
    no_quiet = await add_checkin(h, night_owl, "daily_mood", utc(3, 2, 17))
    # the worker was down from Monday 10:00 to Tuesday 02:00 EST
    h.clock.set(utc(3, 3, 7))
    result = await tick(h)
    assert (result.started, result.deferred, result.missed) == (1, 1, 1)
    assert (await get(h, no_quiet)).status is CheckinStatus.ACTIVE
    assert h.twilio.sent_to(night_owl.phone) == [DAILY_MOOD_Q.replace("Maya", "Owl")]
    deferred = await get(h, in_window)
    assert (deferred.status, deferred.due_at) == (CheckinStatus.SCHEDULED, utc(3, 3, 13))
    missed = await get(h, past_window)
    assert (missed.status, missed.outcome) == (CheckinStatus.MISSED, "missed")
    assert h.twilio.sent_to(quiet.phone) == h.twilio.sent_to(gone.phone) == []
    for at in (utc(3, 3, 9), utc(3, 3, 12, 59)):  # 04:00 and 07:59 local: still quiet
        h.clock.set(at)
        assert (await tick(h)).started == 0
    h.clock.set(utc(3, 3, 13))
    assert (await tick(h)).started == 1
    assert (await get(h, in_window)).status is CheckinStatus.ACTIVE
    assert len(h.twilio.sent_to(quiet.phone)) == 1
    async with h.db.read() as s:
        left = await s.scalar(select(func.count()).where(Checkin.status == CheckinStatus.SCHEDULED))
    assert left == 0  # none silently dropped


async def test_late_reply_after_expiry_is_recorded_and_acknowledged(h: Harness) -> None:
    p = await h.patient()
    c = await start_now(h, p, "daily_mood")
    await _expire(h, c)
    h.clock.advance(hours=3)
    await h.sms(p.phone, "6")
    async with h.db.read() as s:
        inbound = (
            await s.scalars(
                select(Message).where(Message.direction == Direction.IN, Message.patient_id == p.id)
            )
        ).all()
        answers = await s.scalar(select(func.count()).where(Answer.checkin_id == c.id))
    assert [m.body for m in inbound] == ["6"]
    assert answers == 0
    [late] = await escalations(h, p, "patient_message")
    assert late.summary == "Late reply to an expired check-in."
    assert late.message_id == inbound[0].id
    assert h.twilio.sent_to(p.phone)[-1].startswith("Thanks, we got your message.")
    assert (await get(h, c)).status is CheckinStatus.EXPIRED


async def test_one_failing_row_does_not_stop_the_others(h: Harness) -> None:
    bad_patient = await h.patient()
    good_patient = await h.patient("Ben")
    bad = await add_checkin(h, bad_patient, "no_such_flow", START - timedelta(minutes=5))
    good = await add_checkin(h, good_patient, "daily_mood", START)
    result = await tick(h)
    assert (result.started, result.failed) == (1, 1)
    assert (await get(h, good)).status is CheckinStatus.ACTIVE
    row = await get(h, bad)
    assert row.status is CheckinStatus.SCHEDULED and row.state is None
    assert row.lease_until == START + dispatch.LEASE  # retried after its lease
    assert (await tick(h)).handled == 0  # still leased
    h.clock.set(START + dispatch.LEASE + timedelta(seconds=1))
    assert (await tick(h)).failed == 1
    # it never goes out, but it does not stay pending for ever either
    h.clock.set(row.expires_at or START)
    assert (await tick(h)).missed == 1
    assert (await get(h, bad)).status is CheckinStatus.MISSED
    assert await outbound(h, checkin=bad) == []


async def test_reminder_and_expiry_jobs_survive_a_failing_row(h: Harness) -> None:
    a = await h.patient()
    b = await h.patient("Ben")
    broken = await start_now(h, a, "daily_mood")
    fine = await start_now(h, b, "daily_mood")
    async with h.db.write() as s:  # pinned to a version that does not exist
        await s.execute(update(Checkin).where(Checkin.id == broken.id).values(flow_version=99))
    h.clock.set(START + timedelta(hours=4))
    result = await dispatch.remind_due(h.db, h.settings, h.clock.now())
    assert (result.reminded, result.failed) == (1, 1)
    h.clock.set(START + timedelta(hours=24))
    result = await dispatch.expire_due(h.db, h.settings, h.clock.now())
    assert (result.expired, result.failed) == (1, 1)
    assert (await get(h, fine)).status is CheckinStatus.EXPIRED
    # a row whose flow cannot load is closed, not retried on every tick forever
    closed = await get(h, broken)
    assert (closed.status, closed.outcome) == (CheckinStatus.EXPIRED, "flow_unavailable")


async def test_quiet_now_and_start_windows_follow_the_patient(h: Harness) -> None:
    """The helpers the jobs use, in the patient's zone (sanity for the cases above)."""
    from bot.services.scheduling import quiet_now, start_windows

    p = await h.patient()
    assert quiet_now(p, utc(3, 3, 2))  # 21:00 EST
    assert not quiet_now(p, utc(3, 3, 1, 59))
    assert quiet_now(p, utc(3, 3, 12, 59)) and not quiet_now(p, utc(3, 3, 13))
    p.quiet_start, p.quiet_end = time(0), time(0)
    assert not quiet_now(p, utc(3, 3, 7))
    p.quiet_start, p.quiet_end = time(21), time(8)
    # a 4h reminder from 20:00 EST goes out at 08:00; expiry keeps 20h after it
    assert start_windows(p, utc(3, 3, 1), 4 * 3600, 24 * 3600) == (utc(3, 3, 13), utc(3, 4, 1))
    assert start_windows(p, utc(3, 3, 1), 4 * 3600, 6 * 3600) == (utc(3, 3, 13), utc(3, 3, 15))


class FlakySettings:
    """Settings whose ``clinic_name`` fails the first ``failures`` times it is read: a row that
    fails half-way through its start, after the check-in row was already changed."""

    def __init__(self, real: Settings, failures: int) -> None:
        self._real = real
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        if name == "clinic_name" and self.failures > 0:
            self.failures -= 1
            raise RuntimeError("clinic_name unavailable")
        return getattr(self._real, name)


async def test_a_row_failing_after_it_was_changed_does_not_stop_the_tick(h: Harness) -> None:
    a = await h.patient()
    b = await h.patient("Ben")
    first = await add_checkin(h, a, "daily_mood", START - timedelta(minutes=2))
    second = await add_checkin(h, b, "daily_mood", START - timedelta(minutes=1))
    # the first failure sends the batch to the one-by-one path, the second fails a row there
    flaky = cast(Settings, FlakySettings(h.settings, failures=2))
    result = await dispatch.start_due(h.db, flaky, START)
    assert (result.started, result.failed) == (1, 1)
    row = await get(h, first)
    # everything the failed start did is rolled back; only the lease remains
    assert (row.status, row.state, row.flow_version, row.started_at) == (
        CheckinStatus.SCHEDULED,
        None,
        None,
        None,
    )
    assert row.lease_until == START + dispatch.LEASE
    assert await outbound(h, checkin=first) == []
    assert (await get(h, second)).status is CheckinStatus.ACTIVE
    h.clock.set(START + dispatch.LEASE + timedelta(seconds=1))
    assert (await dispatch.start_due(h.db, flaky, h.clock.now())).started == 1
    assert len(await outbound(h, checkin=first)) == 1


async def test_expiry_failing_while_starting_the_waiting_checkin_is_retried(
    h: Harness,
) -> None:
    a = await h.patient()
    b = await h.patient("Ben")
    stuck = await start_now(h, a, "daily_mood")
    waiting = await add_checkin(h, a, "gad2", START + timedelta(minutes=1))
    other = await start_now(h, b, "daily_mood")
    flaky = cast(Settings, FlakySettings(h.settings, failures=1))
    h.clock.set(START + timedelta(hours=24))
    result = await dispatch.expire_due(h.db, flaky, h.clock.now())
    assert (result.expired, result.failed) == (1, 1)
    assert (await get(h, other)).status is CheckinStatus.EXPIRED
    assert (await get(h, stuck)).status is CheckinStatus.ACTIVE
    assert (await get(h, waiting)).status is CheckinStatus.SCHEDULED
    result = await dispatch.expire_due(h.db, flaky, h.clock.now())
    assert (result.expired, result.failed) == (1, 0)
    assert (await get(h, stuck)).status is CheckinStatus.EXPIRED
    assert (await get(h, waiting)).status is CheckinStatus.ACTIVE
