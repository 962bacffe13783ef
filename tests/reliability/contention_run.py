"""Case 6's run, shared by ``test_sqlite_contention.py`` (which asserts what happened) and
``bench/sqlite_contention.py`` (which prints how fast and how slow it was).

``python -m bot serve`` and ``python -m bot worker`` (production ticks: dispatch every 5 s
in batches of 500, the outbox every 2 s) share one SQLite database, with the real Twilio
client against a fake Twilio in this process. The worker starts check-ins falling due over
``spread_s`` seconds and sends their first messages, while several concurrent senders post
signed webhooks: replies of patients in a conversation ("talkers"), replies of the patients
whose check-in the worker just started, and delivery callbacks for messages the fake
Twilio accepted. So both processes write the same tables at once, each through its own
``BEGIN IMMEDIATE`` writer.

The load is a fixed amount of work, not a length of time: it ends once every talker has
replied and every patient the worker texted has answered (callbacks go along the way), so
a slow machine does the same work, only more slowly. A generous timeout stops a hung run.
Then the worker drains what is left, both processes get SIGTERM and their logs are read.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from db.enums import CheckinStatus, Direction
from db.models import Checkin, Message
from db.session import Database
from tests.reliability.support import (
    Accepted,
    Proc,
    RecordingTwilio,
    app_env,
    bot_command,
    free_port,
    seed_active,
    seed_scheduled,
    signed,
    sms_params,
    status_params,
    unsent_and_scheduled,
    wait_healthy,
    wait_until,
)

TALKERS = 600  # patients already in a conversation, replying once each
SENDERS = 8
CLIENT_TIMEOUT_S = 90.0
"""Above SQLite's 30 s busy timeout, so a lock wait shows as slow (or as "database is
locked" from the server), never as a lost request; not a speed limit."""
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Sent:
    kind: str  # reply | started | status
    status: int  # 0: no HTTP answer
    started: float  # time.monotonic()
    finished: float
    body: str  # the answer's first 200 characters when it was not a 200

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class ContentionRun:
    due: dict[int, str]  # check-in id -> phone, falling due during the run
    requests: list[Sent]
    load_started: float  # time.monotonic()
    load_ended: float
    started: int  # due check-ins no longer scheduled
    firsts: dict[int, int]  # due check-in id -> first messages ("Hi ...") sent for it
    logs: dict[str, str]  # server, worker
    exit_codes: dict[str, int | None]


async def run_contention(
    sqlite_path: Path, tmp_path: Path, *, due: int, spread_s: float, load_timeout_s: float
) -> ContentionRun:
    """Run case 6 on the migrated SQLite file ``sqlite_path``: ``due`` check-ins falling due
    evenly over ``spread_s`` seconds (from ~3 s after seeding)."""
    rng = random.Random(6)
    url = f"sqlite+aiosqlite:///{sqlite_path}"
    talkers = list(await seed_active(url, TALKERS, flow="daily_mood", first=50_000))
    t0 = datetime.now(UTC) + timedelta(seconds=3)
    due_rows = await seed_scheduled(
        url, due, due=lambda i: t0 + timedelta(seconds=spread_s * i / due), first=60_000
    )
    due_phones = set(due_rows.values())

    twilio = RecordingTwilio()
    await twilio.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Proc(
        "server",
        bot_command("serve"),
        app_env(url, twilio_base=twilio.base_url, port=port),
        tmp_path / "server.log",
    )
    worker = Proc(
        "worker",
        bot_command("worker"),
        app_env(url, twilio_base=twilio.base_url, port=port),
        tmp_path / "worker.log",
    )
    db = Database(url)
    requests: list[Sent] = []
    codes: dict[str, int | None] = {}
    try:
        await wait_healthy(server, port)
        await worker.wait_for_log("worker started with ticks", 60)
        talk = iter(talkers)
        talkers_left = len(talkers)
        fresh: list[Accepted] = []  # first messages to due patients, not answered yet
        answered: set[str] = set()
        uncalled: list[Accepted] = []  # accepted messages without a callback yet
        absorbed = 0
        sid_seq = iter(range(10**9))

        def absorb() -> None:
            """Take in what the fake Twilio accepted since the last look."""
            nonlocal absorbed
            new = twilio.accepted[absorbed:]
            absorbed += len(new)
            for a in new:
                uncalled.append(a)
                if a.to in due_phones and a.to not in answered:
                    answered.add(a.to)  # taken: the patient answers once
                    fresh.append(a)

        def done() -> bool:
            return talkers_left == 0 and not fresh and len(answered) == len(due_phones)

        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        load_started = time.monotonic()
        give_up = load_started + load_timeout_s
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def post(path: str, params: dict[str, str], kind: str) -> None:
                req = signed(base, path, params)
                started = time.monotonic()
                try:
                    async with http.post(base + path, data=req.body, headers=req.headers) as r:
                        text = await r.text()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    text, status = type(exc).__name__, 0
                body = "" if status == 200 else text[:200]
                requests.append(Sent(kind, status, started, time.monotonic(), body))

            async def sender() -> None:
                nonlocal talkers_left
                while not done() and time.monotonic() < give_up:
                    absorb()
                    roll = rng.random()
                    if roll < 0.3 and fresh:
                        # a patient the worker just texted answers the daily mood question
                        a = fresh.pop(rng.randrange(len(fresh)))
                        sid = f"SM{next(sid_seq):032d}"
                        await post("/twilio/sms", sms_params(sid, a.to, "8"), "started")
                    elif roll < 0.6 and uncalled:
                        a = uncalled.pop(rng.randrange(len(uncalled)))
                        status = rng.choice(("sent", "delivered"))
                        await post("/twilio/status", status_params(a.sid, status), "status")
                    elif (phone := next(talk, None)) is not None:
                        talkers_left -= 1
                        sid = f"SM{next(sid_seq):032d}"
                        await post("/twilio/sms", sms_params(sid, phone, "6"), "reply")
                    elif fresh:
                        a = fresh.pop(rng.randrange(len(fresh)))
                        sid = f"SM{next(sid_seq):032d}"
                        await post("/twilio/sms", sms_params(sid, a.to, "8"), "started")
                    else:
                        await asyncio.sleep(0.05)  # waiting for the worker to text more

            await asyncio.gather(*(sender() for _ in range(SENDERS)))
        load_ended = time.monotonic()
        if not done():
            kinds = {k: sum(1 for r in requests if r.kind == k) for k in ("reply", "started")}
            raise AssertionError(
                f"the load did not finish within {load_timeout_s:.0f} s (a hung run, not a "
                f"slow one): {kinds['reply']}/{TALKERS} talkers replied, {kinds['started']}/"
                f"{due} texted patients answered, {len(answered)} texted so far; worker log:\n"
                + worker.tail()
            )

        async def drained() -> bool:
            return await unsent_and_scheduled(db) == (0, 0)

        await wait_until(
            drained, DRAIN_TIMEOUT_S, "the worker to start every check-in and drain the outbox"
        )
        async with db.read() as s:
            firsts = dict(
                (
                    await s.execute(
                        select(Message.checkin_id, func.count())
                        .where(
                            Message.direction == Direction.OUT,
                            Message.checkin_id.in_(due_rows),
                            Message.body.like("Hi %"),  # the mood question, not the thanks
                        )
                        .group_by(Message.checkin_id)
                    )
                ).all()
            )
            started = await s.scalar(
                select(func.count())
                .select_from(Checkin)
                .where(Checkin.id.in_(due_rows), Checkin.status != CheckinStatus.SCHEDULED)
            )
    finally:
        codes["server"] = server.stop()
        codes["worker"] = worker.stop()
        await db.dispose()
        await twilio.close()
    return ContentionRun(
        due=due_rows,
        requests=requests,
        load_started=load_started,
        load_ended=load_ended,
        started=int(started or 0),
        firsts={int(k): int(v) for k, v in firsts.items() if k is not None},
        logs={"server": server.log(), "worker": worker.log()},
        exit_codes=codes,
    )
