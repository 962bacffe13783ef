"""Case 5: 200 patients each send three replies at once to a PHQ-9, on SQLite and PostgreSQL.

Every patient is in an active PHQ-9 (its first question already sent). All 200 patients
fire concurrently; each patient's three replies are fired back to back without waiting
for an answer, in order, with three different values, each over its own connection
(through the real app: signed webhooks, the real Twilio client against a fake Twilio).

Three requests in flight on three connections have no order on the wire (nor do
Twilio's webhooks), so "in order" is checked against the order in which the app's
webhook handler received them (a wrapper around ``twilio_hooks._inbound_sms`` notes it):
the server must never reorder what it has received. How many patients' replies reached
the server in another order than they were sent is printed.

Asserted for every patient: every request answered 200; exactly three inbound rows;
answers q1, q2, q3 recorded once each, in that order, with the values in the order the
server received them; the conversation then asked q4, and no question twice.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from bot.web import twilio_hooks
from db.enums import Direction
from db.models import Answer, Checkin, Message, Patient
from tests.reliability.support import SEND_TIMEOUT_S, seed_active, signed, sms_params
from tests.web.harness import AUTH_TOKEN, PUBLIC_BASE, START, harness, new_sid

PATIENTS = 200
REPLIES = 3


async def test_200_patients_three_replies_each_at_once_recorded_once_in_order(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    received: dict[str, list[int]] = {}
    handler = twilio_hooks._inbound_sms

    async def noting_arrival(request: web.Request) -> web.StreamResponse:
        received.setdefault(request.headers["X-Test-Phone"], []).append(
            int(request.headers["X-Test-Value"])
        )
        return await handler(request)

    monkeypatch.setattr(twilio_hooks, "_inbound_sms", noting_arrival)
    async with harness(db_url, SMS_SEND_TIMEOUT=SEND_TIMEOUT_S) as h:
        by_phone = await seed_active(
            db_url, PATIENTS, flow="phq9", now=START - timedelta(minutes=5)
        )
        # three distinct values per patient, so any reordering shows
        values = {p: rng.sample(range(4), REPLIES) for p in by_phone}
        url = str(h.client.make_url("/twilio/sms"))
        statuses: Counter[int] = Counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def post(phone: str, value: int) -> None:
                params = sms_params(new_sid(), phone, str(value))
                req = signed(PUBLIC_BASE, "/twilio/sms", params, auth_token=AUTH_TOKEN)
                headers = {**req.headers, "X-Test-Phone": phone, "X-Test-Value": str(value)}
                async with http.post(url, data=req.body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

            async def patient(phone: str) -> None:
                # back to back: each request starts before the previous one is answered
                tasks = []
                for v in values[phone]:
                    tasks.append(asyncio.create_task(post(phone, v)))
                    await asyncio.sleep(0)
                await asyncio.gather(*tasks)

            await asyncio.gather(*(patient(p) for p in by_phone))
        await h.drain()

        async with h.db.read() as s:
            answers = (
                await s.execute(
                    select(Patient.phone, Answer.question_key, Answer.value)
                    .join(Checkin, Checkin.id == Answer.checkin_id)
                    .join(Patient, Patient.id == Checkin.patient_id)
                    .order_by(Answer.id)
                )
            ).all()
            inbound = Counter(
                (
                    await s.scalars(select(Message.phone).where(Message.direction == Direction.IN))
                ).all()
            )
            asked = (
                await s.execute(
                    select(Message.phone, Message.body).where(Message.direction == Direction.OUT)
                )
            ).all()

    got: dict[str, list[tuple[str, int]]] = {}
    for phone, key, value in answers:
        got.setdefault(phone, []).append((key, int(value)))
    expected = {p: [(f"q{i + 1}", v) for i, v in enumerate(received.get(p, []))] for p in by_phone}
    wrong = {p: (got.get(p), expected[p]) for p in by_phone if got.get(p) != expected[p]}
    reordered_on_the_wire = sum(1 for p in by_phone if received.get(p) != values[p])
    print(
        f"case 5 ({db_url.split('+')[0]}): {PATIENTS} patients x {REPLIES} replies at once; "
        f"HTTP {dict(statuses)}; {len(answers)} answers; {reordered_on_the_wire} patients' "
        f"replies reached the server in another order than sent; {len(wrong)} patients' "
        "answers not in the order the server received them"
    )
    assert statuses == Counter({200: PATIENTS * REPLIES})
    assert inbound == Counter(dict.fromkeys(by_phone, REPLIES))
    assert all(sorted(received[p]) == sorted(values[p]) for p in by_phone)
    # once each, q1-q3, nothing skipped or doubled
    assert all([k for k, _v in got.get(p, [])] == ["q1", "q2", "q3"] for p in by_phone)
    # in the order received
    assert not wrong, f"{len(wrong)} patients, e.g. (recorded, received): {list(wrong.items())[:3]}"
    # each question asked once: the next one is q4, and q1-q3 were not asked again
    questions = Counter(
        (phone, body.split(" ", 1)[0])
        for phone, body in asked
        if body[:2] in ("1/", "2/", "3/", "4/")
    )
    assert all([questions[(p, f"{i}/9")] for i in range(1, 5)] == [1, 1, 1, 1] for p in by_phone)
