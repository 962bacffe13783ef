"""Case 6: the web app and a worker in two processes on one SQLite file, under load.

``python -m bot serve`` and ``python -m bot worker`` (production ticks: dispatch every
5 s in batches of 500, the outbox every 2 s) share one SQLite database, with the real
Twilio client against a fake Twilio in this process. For ~20 s the worker starts
check-ins falling due throughout the run and sends their first messages, while the test
posts signed webhooks from several concurrent senders: replies of patients in a
conversation (answers), replies of patients whose check-in the worker just started, and
delivery callbacks for messages the fake Twilio accepted. So both processes write the
same tables at once, each through its own ``BEGIN IMMEDIATE`` writer.

Asserted: zero "database is locked" (in both processes' logs and in every response),
no 503 ("database unavailable") and no ERROR record in either log, every request answered
200 within the client timeout; afterwards every check-in due during the run started
exactly once and the outbox is empty.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from db.enums import CheckinStatus, Direction
from db.models import Checkin, Message
from db.session import Database
from tests.reliability.support import (
    FULL,
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

DURATION_S = 60.0 if FULL else 20.0
DUE = 1500 if FULL else 600  # check-ins falling due evenly over the run
TALKERS = 600  # patients already in a conversation, replying
SENDERS = 8
CLIENT_TIMEOUT_S = 40.0  # above SQLite's 30 s busy timeout: a lock wait shows as slow, not lost


async def test_web_and_worker_processes_share_sqlite_without_database_is_locked(
    sqlite_template: Path, tmp_path: Path
) -> None:
    rng = random.Random(6)
    path = tmp_path / "shared.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite+aiosqlite:///{path}"
    talkers = list(await seed_active(url, TALKERS, flow="daily_mood", first=50_000))
    t0 = datetime.now(UTC) + timedelta(seconds=3)
    span = DURATION_S - 6  # the last ones fall due well before the run ends
    due = await seed_scheduled(
        url, DUE, due=lambda i: t0 + timedelta(seconds=span * i / DUE), first=60_000
    )
    started_phones = set(due.values())

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
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    bodies: list[str] = []
    slowest = 0.0
    try:
        await wait_healthy(server, port)
        await worker.wait_for_log("worker started with ticks", 60)
        talk = iter(talkers)
        answered: set[str] = set()
        called_back: set[str] = set()
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        sid_seq = iter(range(10**9))
        end = time.monotonic() + DURATION_S
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def post(path: str, params: dict[str, str], kind: str) -> None:
                nonlocal slowest
                req = signed(base, path, params)
                started = time.monotonic()
                try:
                    async with http.post(base + path, data=req.body, headers=req.headers) as r:
                        text = await r.text()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    text, status = type(exc).__name__, 0
                slowest = max(slowest, time.monotonic() - started)
                statuses[status] += 1
                kinds[kind] += 1
                if status != 200:
                    bodies.append(text[:200])

            async def sender() -> None:
                while time.monotonic() < end:
                    roll = rng.random()
                    fresh = [a for a in twilio.accepted if a.to in started_phones]
                    if roll < 0.3 and fresh:
                        # a patient the worker just texted answers the daily mood question
                        a = rng.choice(fresh)
                        if a.to not in answered:
                            answered.add(a.to)
                            sid = f"SM{next(sid_seq):032d}"
                            await post("/twilio/sms", sms_params(sid, a.to, "8"), "started")
                            continue
                    if roll < 0.6 and twilio.accepted:
                        a = rng.choice(twilio.accepted)
                        if a.sid not in called_back:
                            called_back.add(a.sid)
                            status = rng.choice(("sent", "delivered"))
                            await post("/twilio/status", status_params(a.sid, status), "status")
                            continue
                    phone = next(talk, None)
                    if phone is not None:
                        sid = f"SM{next(sid_seq):032d}"
                        await post("/twilio/sms", sms_params(sid, phone, "6"), "reply")
                    else:
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(sender() for _ in range(SENDERS)))

        async def drained() -> bool:
            return await unsent_and_scheduled(db) == (0, 0)

        await wait_until(drained, 60, "the worker to start every check-in and drain the outbox")
        async with db.read() as s:
            firsts = dict(
                (
                    await s.execute(
                        select(Message.checkin_id, func.count())
                        .where(
                            Message.direction == Direction.OUT,
                            Message.checkin_id.in_(due),
                            Message.body.like("Hi %"),  # the mood question, not the thanks
                        )
                        .group_by(Message.checkin_id)
                    )
                ).all()
            )
            started = await s.scalar(
                select(func.count())
                .select_from(Checkin)
                .where(Checkin.id.in_(due), Checkin.status != CheckinStatus.SCHEDULED)
            )
    finally:
        server_code = server.stop()
        worker_code = worker.stop()
        await db.dispose()
        await twilio.close()

    logs = {"server": server.log(), "worker": worker.log()}
    locked = {name: text.lower().count("database is locked") for name, text in logs.items()}
    unavailable = {name: text.count("database unavailable") for name, text in logs.items()}
    errors = {name: text.count('"level": "ERROR"') for name, text in logs.items()}
    total = sum(statuses.values())
    print(
        f"case 6: {DURATION_S:.0f} s, {total} webhooks ({total / DURATION_S:.0f}/s: "
        f"{dict(kinds)}), HTTP {dict(statuses)}, slowest {slowest:.2f} s; worker started "
        f"{started}/{DUE} check-ins; 'database is locked': {locked}; 503s logged: "
        f"{unavailable}; ERROR records: {errors}"
    )
    assert locked == {"server": 0, "worker": 0}
    assert not any("locked" in b.lower() for b in bodies)
    assert unavailable == {"server": 0, "worker": 0}
    assert errors == {"server": 0, "worker": 0}, "\n".join(
        line[:600] for text in logs.values() for line in text.splitlines() if '"ERROR"' in line
    )
    assert statuses == Counter({200: total}), bodies[:5]
    assert slowest < CLIENT_TIMEOUT_S
    assert kinds["reply"] > 0 and kinds["status"] > 0 and kinds["started"] > 0
    # the worker did its part meanwhile: each due check-in started once, first message sent
    assert started == DUE
    assert firsts == dict.fromkeys(due, 1)
    assert (server_code, worker_code) == (0, 0)
