"""The one step writer: its guard, a number changed mid-conversation, and every library flow
with random replies written exactly as the pure engine computes them (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.library import flow_sources
from bot.services.conversations import resume_checkin
from bot.services.steps import Target, write_step
from db.enums import CheckinStatus, Direction, Role
from db.models import Answer, Checkin, Escalation, Message, Patient, Score
from flows import engine
from flows.definition import load_flow
from flows.engine import ConversationState, Reply
from tests.web.harness import Harness, harness

OLD = "+12025550111"
NEW = "+12025550222"


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _answers(h: Harness, checkin_id: int) -> int:
    async with h.db.read() as s:
        return int(
            await s.scalar(select(func.count(Answer.id)).where(Answer.checkin_id == checkin_id))
            or 0
        )


async def test_a_number_changed_mid_conversation_no_longer_answers_for_the_patient(
    h: Harness,
) -> None:
    p = await h.patient(phone=OLD)
    c = await h.start(p, "phq9")
    await h.sms(OLD, "1")
    assert await _answers(h, c.id) == 1
    token = await h.token(Role.ADMIN)
    r = await h.client.patch(
        f"/api/v1/patients/{p.id}",
        json={"phone": NEW},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status == 200, await r.text()
    async with h.db.read() as s:
        before = set((await s.scalars(select(Message.id))).all())

    await h.sms(OLD, "2")

    assert await _answers(h, c.id) == 1  # not the patient's answer
    async with h.db.read() as s:
        inbound = (
            await s.scalars(
                select(Message)
                .where(Message.direction == Direction.IN, Message.phone == OLD)
                .order_by(Message.id.desc())
            )
        ).first()
        assert inbound is not None and inbound.patient_id is None  # an unknown number
        new = (await s.scalars(select(Message).where(Message.id.not_in(before)))).all()
        to_old = [m for m in new if m.direction is Direction.OUT and m.phone == OLD]
        assert all(m.checkin_id is None and m.patient_id is None for m in to_old)
        assert [m.purpose for m in to_old] == ["unknown"]
        checkin = await s.get(Checkin, c.id)
        assert checkin is not None and checkin.status is CheckinStatus.ACTIVE

    await h.sms(NEW, "2")  # the patient, from their new number, carries on
    assert await _answers(h, c.id) == 2


async def test_the_guard_refuses_a_stale_revision_an_old_number_and_an_opted_out_patient(
    h: Harness,
) -> None:
    p = await h.patient(phone=OLD)
    c = await h.start(p, "phq9")
    async with h.db.read() as s:
        row = await s.get(Checkin, c.id)
        assert row is not None and row.state is not None and row.flow_version is not None
        revision = row.revision
        state = ConversationState.from_json(row.state)
    flow = load_flow(flow_sources()["phq9"])
    step = engine.resume(flow, state, Reply("1"), h.clock.now())
    good = Target(c.id, p.id, OLD, revision)
    refused = [
        Target(c.id, p.id, OLD, revision + 1),  # computed from another state
        Target(c.id, p.id, NEW, revision),  # not the patient's number
        Target(c.id, p.id, OLD, revision, starting=True),  # not scheduled
    ]
    for target in refused:
        async with h.db.write() as s:
            assert await write_step(s, target=target, step=step, now=h.clock.now()) is None
    assert await _answers(h, c.id) == 0
    async with h.db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        patient.opted_out_at = h.clock.now()
    async with h.db.write() as s:
        assert await write_step(s, target=good, step=step, now=h.clock.now()) is None
    async with h.db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        patient.opted_out_at = None
    async with h.db.write() as s:
        written = await write_step(s, target=good, step=step, now=h.clock.now())
        assert written is not None and len(written.ids) == 1
    assert await _answers(h, c.id) == 1
    async with h.db.write() as s:  # the same step again: its revision has moved on
        assert await write_step(s, target=good, step=step, now=h.clock.now()) is None
    assert await _answers(h, c.id) == 1


# -- every library flow, random replies: the database holds what the pure engine says --------

REPLIES = st.lists(
    st.sampled_from(
        ["0", "1", "2", "3", "yes", "no", "YES", "n", "4", "5", "maybe", "10", "", "🙂", "1 2"]
    ),
    min_size=1,
    max_size=14,
)


def _pure(flow_key: str, replies: list[str], context: engine.Context, h: Harness) -> list[Any]:
    """What the engine alone says, hand-overs included: (flow, answers, scores, escalations)."""
    sources = flow_sources()
    flow = load_flow(sources[flow_key])
    now = h.clock.now()
    step = engine.start(flow, context, now)
    chain: list[Any] = []

    def take(step: engine.Step, flow: Any) -> tuple[engine.Step, Any]:
        chain.append((flow.key, step))
        while (key := engine.handover_key(step)) is not None:
            flow = load_flow(sources[key])
            step = engine.handover(step, flow, now)
            chain.append((flow.key, step))
        return step, flow

    step, flow = take(step, flow)
    for text in replies:
        if not step.state.active:
            break
        step, flow = take(engine.resume(flow, step.state, Reply(text), now), flow)
    return chain


def _summary(chain: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    answers, scores, escalations = [], [], []
    for _key, step in chain:
        for e in step.events:
            if isinstance(e, engine.AnswerRecorded):
                answers.append((e.key, e.value))
            elif isinstance(e, engine.ScoreComputed):
                scores.append((e.name, e.total))
            elif isinstance(e, engine.EscalationRequested):
                escalations.append((str(e.severity), e.reason))
    return answers, scores, escalations


@pytest.mark.parametrize("flow_key", sorted(flow_sources()))
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(replies=REPLIES)
async def test_library_flows_are_written_as_the_engine_computes_them(
    h: Harness, flow_key: str, replies: list[str]
) -> None:
    p = await h.patient()
    c = await h.start(p, flow_key)
    async with h.db.read() as s:
        row = await s.get(Checkin, c.id)
        assert row is not None and row.state is not None
        context = ConversationState.from_json(row.state).context
    for text in replies:
        async with h.db.write() as s:
            patient = await s.get(Patient, p.id)
            active = await s.scalar(
                select(Checkin)
                .where(Checkin.patient_id == p.id, Checkin.status == CheckinStatus.ACTIVE)
                .order_by(Checkin.id.desc())
                .limit(1)
            )
            if active is None or patient is None:
                break
            before = active.revision
            applied = await resume_checkin(
                session=s,
                checkin=active,
                patient=patient,
                settings=h.settings,
                input=Reply(text),
                now=h.clock.now(),
            )
            assert applied.written and active.revision == before + 1
    answers, scores, escalations = _summary(_pure(flow_key, replies, context, h))
    async with h.db.read() as s:
        ids = list((await s.scalars(select(Checkin.id).where(Checkin.patient_id == p.id))).all())
        got_answers = [
            (a.question_key, a.value)
            for a in (
                await s.scalars(
                    select(Answer).where(Answer.checkin_id.in_(ids)).order_by(Answer.id)
                )
            ).all()
        ]
        got_scores = [
            (x.instrument, x.total)
            for x in (
                await s.scalars(select(Score).where(Score.patient_id == p.id).order_by(Score.id))
            ).all()
        ]
        got_escalations = [
            (str(e.severity), e.reason)
            for e in (
                await s.scalars(
                    select(Escalation).where(Escalation.patient_id == p.id).order_by(Escalation.id)
                )
            ).all()
        ]
    assert got_answers == answers
    assert got_scores == scores
    assert got_escalations == escalations
    h.clock.advance(days=1)


async def test_steps_written_together_keep_each_guard(h: Harness) -> None:
    """Two steps of the same shape share one UPDATE; the stale one writes nothing."""
    from bot.services.steps import StepWrite, write_steps

    first, second = await h.patient(phone=OLD), await h.patient(phone=NEW)
    c1, c2 = await h.start(first, "phq9"), await h.start(second, "phq9")
    flow = load_flow(flow_sources()["phq9"])
    plans = []
    async with h.db.read() as s:
        for c, p in ((c1, first), (c2, second)):
            row = await s.get(Checkin, c.id)
            assert row is not None and row.state is not None
            step = engine.resume(
                flow, ConversationState.from_json(row.state), Reply("1"), h.clock.now()
            )
            plans.append((Target(c.id, p.id, p.phone, row.revision), step))
    stale = Target(c2.id, second.id, NEW, plans[1][0].revision + 5)
    async with h.db.write() as s:
        written = await write_steps(
            s, [StepWrite(plans[0][0], plans[0][1]), StepWrite(stale, plans[1][1])], h.clock.now()
        )
    assert written[0] is not None and written[1] is None
    assert (await _answers(h, c1.id), await _answers(h, c2.id)) == (1, 0)
