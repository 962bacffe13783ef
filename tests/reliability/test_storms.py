"""Case 4: duplicate and out-of-order storms, on SQLite and PostgreSQL, with exact counts.

Patients in an active PHQ-9 each send ten messages: nine answers, then a free-text
note after the questionnaire ended. 20% of all deliveries re-deliver a ``MessageSid``
already used: half fired together with the original (concurrent duplicates), half later,
together with one of the patient's later messages or after the storm (out of order).
Patients run concurrently; one patient's messages go in order, a message and its
duplicates at once. Then every outbound message sent meanwhile gets its status callbacks
(queued, sent, delivered, up to a chosen furthest state) shuffled, a third of them in
reverse (delivered before sent before queued), some repeated, all interleaved and
concurrent.

Exact counts afterwards: inbound rows = distinct SIDs; nine answers per patient with the
sent values, in order; one score and one "patient message" escalation per patient;
outbound rows = what the flow sends (from the pure engine) plus one acknowledgement each,
every one sent exactly once (the fake Twilio's log); each outbound status = its furthest
callback; every request answered 200.

``RELIABILITY_FULL=1``: 10,000 deliveries per backend and callbacks for every outbound
message; CI: 3,000 on PostgreSQL, 1,000 on SQLite, callbacks for 30% of the messages.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta

import aiohttp
from sqlalchemy import func, select

from bot.library import flow_sources
from db.enums import Direction, MessageStatus
from db.models import Answer, Checkin, Escalation, Message, Patient, Score
from flows.definition import load_flow
from flows.engine import Context, Reply, SendMessage, resume, start
from tests.reliability.support import (
    FULL,
    SEND_TIMEOUT_S,
    seed_active,
    signed,
    sms_params,
    status_params,
)
from tests.web.harness import AUTH_TOKEN, PUBLIC_BASE, START, harness

# inbound deliveries per backend, 20% of them re-deliveries
DELIVERIES = (
    {"sqlite": 10_000, "postgresql": 10_000} if FULL else {"sqlite": 1_000, "postgresql": 3_000}
)
# the share of outbound messages that get status callbacks
CALLBACK_SHARE = 1.0 if FULL else 0.3
PER_PATIENT = 10  # nine answers and a note
CONCURRENCY = 48
NOTE = "ok thanks, talk soon"
CALLBACK_ORDER = ("queued", "sent", "delivered")


def _flow_messages(values: list[int]) -> int:
    """How many messages the PHQ-9 sends after its first question for these answers."""
    flow = load_flow(flow_sources()["phq9"])
    step = start(flow, Context("Pat"), START)
    sent = 0
    for v in values:
        step = resume(flow, step.state, Reply(str(v)), START)
        sent += sum(1 for e in step.events if isinstance(e, SendMessage))
    assert not step.state.active
    return sent


async def test_duplicate_and_out_of_order_storm_leaves_exact_counts(db_url: str) -> None:
    rng = random.Random(4)
    backend = db_url.split("+")[0]
    deliveries = DELIVERIES[backend]
    patients = deliveries * 4 // 5 // PER_PATIENT
    redeliveries = deliveries - patients * PER_PATIENT
    # a send timeout no busy machine reaches (the harness default is 1 s; see support.py)
    async with harness(db_url, SMS_SEND_TIMEOUT=SEND_TIMEOUT_S) as h:
        by_phone = await seed_active(
            db_url, patients, flow="phq9", now=START - timedelta(minutes=5)
        )
        phones = list(by_phone)
        # values 0-1 with q9 = 0: no escalation from the questionnaire itself
        scripts = {p: [rng.randint(0, 1) for _ in range(8)] + [0] for p in phones}
        sids = {
            p: [f"SM{i:08d}{j:02d}{'0' * 22}" for j in range(PER_PATIENT)]
            for i, p in enumerate(phones)
        }
        bodies = {p: [str(v) for v in scripts[p]] + [NOTE] for p in phones}
        # steps[p][j]: message indexes fired together at step j (j = PER_PATIENT: after all)
        steps = {p: [[j] for j in range(PER_PATIENT)] + [[]] for p in phones}
        modes: Counter[str] = Counter()
        for _ in range(redeliveries):
            p = rng.choice(phones)
            j = rng.randrange(PER_PATIENT)
            if rng.random() < 0.5:
                steps[p][j].append(j)
                modes["concurrent"] += 1
            else:
                steps[p][rng.randint(j + 1, PER_PATIENT)].append(j)
                modes["late"] += 1

        url = str(h.client.make_url("/"))
        statuses: Counter[int] = Counter()
        gate = asyncio.Semaphore(CONCURRENCY)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def post(path: str, params: dict[str, str]) -> None:
                req = signed(PUBLIC_BASE, path, params, auth_token=AUTH_TOKEN)
                async with http.post(url + path[1:], data=req.body, headers=req.headers) as r:
                    await r.read()
                    statuses[r.status] += 1

            async def patient(p: str) -> None:
                async with gate:
                    for group in steps[p]:
                        await asyncio.gather(
                            *(
                                post("/twilio/sms", sms_params(sids[p][j], p, bodies[p][j]))
                                for j in group
                            )
                        )

            await asyncio.gather(*(patient(p) for p in phones))
            await h.drain()
            for _ in range(20):
                if not await h.send_outbox():
                    break
            inbound_statuses = Counter(statuses)

            async with h.db.read() as s:
                outbound = (
                    await s.execute(
                        select(Message.id, Message.provider_sid, Message.status).where(
                            Message.direction == Direction.OUT, Message.sent_at >= START
                        )
                    )
                ).all()
            furthest: dict[str, str] = {}
            callbacks: list[tuple[str, str]] = []
            reversed_count = 0
            for _id, sid, _st in outbound:
                assert sid is not None
                if rng.random() >= CALLBACK_SHARE:
                    furthest[sid] = "queued"  # the fake Twilio's answer; no callback
                    continue
                top = rng.choices(CALLBACK_ORDER, weights=(2, 3, 5))[0]
                furthest[sid] = top
                states = list(CALLBACK_ORDER[: CALLBACK_ORDER.index(top) + 1])
                if len(states) > 1 and rng.random() < 1 / 3:
                    states.reverse()
                    reversed_count += 1
                else:
                    rng.shuffle(states)
                if rng.random() < 0.2:
                    states.append(rng.choice(states))
                callbacks += [(sid, st) for st in states]
            rng.shuffle(callbacks)
            statuses.clear()

            async def callback(sid: str, status: str) -> None:
                async with gate:
                    await post("/twilio/status", status_params(sid, status))

            await asyncio.gather(*(callback(sid, st) for sid, st in callbacks))
            callback_statuses = Counter(statuses)

        async with h.db.read() as s:
            inbound_sids = Counter(
                (
                    await s.scalars(
                        select(Message.provider_sid).where(Message.direction == Direction.IN)
                    )
                ).all()
            )
            answers = (
                await s.execute(
                    select(Patient.phone, Answer.question_key, Answer.value)
                    .join(Checkin, Checkin.id == Answer.checkin_id)
                    .join(Patient, Patient.id == Checkin.patient_id)
                    .order_by(Answer.id)
                )
            ).all()
            scores = dict(
                (
                    await s.execute(
                        select(Patient.phone, Score.total).join(
                            Patient, Patient.id == Score.patient_id
                        )
                    )
                ).all()
            )
            score_count = await s.scalar(select(func.count()).select_from(Score))
            escalations = Counter((await s.scalars(select(Escalation.reason))).all())
            out_rows = (
                await s.execute(
                    select(
                        Message.phone, Message.provider_sid, Message.status, Message.purpose
                    ).where(Message.direction == Direction.OUT, Message.sent_at >= START)
                )
            ).all()
            unsent = await s.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.direction == Direction.OUT,
                    Message.status.in_((MessageStatus.PENDING, MessageStatus.SENDING)),
                )
            )
        twilio_posts = Counter(a.to for a in h.twilio.requests)

    per_patient_out = {p: _flow_messages(scripts[p]) + 1 for p in phones}  # + the ack
    got: dict[str, list[tuple[str, int]]] = {}
    for phone, key, value in answers:
        got.setdefault(phone, []).append((key, int(value)))
    print(
        f"case 4 ({backend}): {sum(inbound_statuses.values())} inbound deliveries "
        f"({patients * PER_PATIENT} distinct SIDs, {redeliveries} re-deliveries: {dict(modes)}), "
        f"{len(callbacks)} status callbacks for {len(outbound)} messages ({reversed_count} "
        f"reversed); HTTP inbound {dict(inbound_statuses)}, callbacks {dict(callback_statuses)}"
    )

    assert inbound_statuses == Counter({200: deliveries})
    assert callback_statuses == Counter({200: len(callbacks)})
    # inbound rows = distinct SIDs, each once
    assert inbound_sids == Counter({sid: 1 for p in phones for sid in sids[p]})
    # nine answers per patient, the values sent, in order; one score each, right total
    assert len(answers) == 9 * patients
    assert all(got[p] == [(f"q{i + 1}", v) for i, v in enumerate(scripts[p])] for p in phones)
    assert score_count == patients
    assert scores == {p: sum(scripts[p]) for p in phones}
    # one "patient message" escalation each (for the note), nothing else
    assert escalations == Counter({"patient_message": patients})
    # outbound: what the flow says plus one acknowledgement, each sent exactly once
    assert unsent == 0
    assert Counter(phone for phone, *_ in out_rows) == Counter(per_patient_out)
    assert Counter(purpose for *_, purpose in out_rows)["ack"] == patients
    assert twilio_posts == Counter(per_patient_out)
    # each outbound status is the furthest callback it got
    assert {sid: str(st) for _p, sid, st, _pur in out_rows} == furthest
