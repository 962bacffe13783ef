"""Case 3: PostgreSQL stopped and started under a steady stream of signed webhooks.

The real server (``python -m bot serve``, signatures on, the fake Twilio in this process)
answers patients replying to a daily-mood check-in, one reply each, from several
concurrent senders. After a short warm-up the shared cluster is stopped
(``pg_ctlcluster ... stop``, fast mode), kept down for a moment while the senders go on,
and started again; the senders keep going until the server has answered 200 again.

Asserted:

- every request got 200 or 503 (never a 500, never a connection error), each within the
  client timeout, and the outage produced 503s;
- ``/healthz`` said 503 during the outage and 200 after it;
- nothing half-written: every ``MessageSid`` answered 200 has its inbound row, its answer
  and its reply in the outbox; every one answered 503 has no row at all;
- the same server process (never restarted) answers 200 again by itself, and Twilio's
  retries of the 503s then all succeed, each recorded exactly once.

The cluster is always started again in a ``finally`` block, and waited for, whatever
happens; the outage is kept under 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from db.enums import CheckinStatus, Direction
from db.models import Answer, Checkin, Message
from db.session import Database
from tests.conftest import drop_pg_database, new_pg_database, pg_url_for
from tests.reliability.support import (
    Proc,
    RecordingTwilio,
    app_env,
    bot_command,
    free_port,
    pg_ctl,
    pg_ready,
    pg_start_and_wait,
    seed_active,
    signed,
    sms_params,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.postgres

PATIENTS = 900
SENDERS = 6
PAUSE_S = 0.04  # per sender between requests: at most ~150 requests/s in all
CLIENT_TIMEOUT_S = 10.0
WARMUP_S = 1.5
DOWN_S = 1.0  # held down after the stop returned; stop + hold + start stays under 5 s
RECOVERY_LIMIT_S = 10.0
AFTER_RECOVERY_S = 1.5


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = new_pg_database(pg_template)
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


@dataclass(frozen=True, slots=True)
class Outcome:
    sid: str
    phone: str
    status: int  # 0: no HTTP answer (connection error or client timeout)
    started: float
    seconds: float
    error: str = ""


async def _post(
    session: aiohttp.ClientSession, base: str, sid: str, phone: str
) -> tuple[int, str, float]:
    req = signed(base, "/twilio/sms", sms_params(sid, phone, "7"))
    t0 = time.monotonic()
    try:
        async with session.post(base + "/twilio/sms", data=req.body, headers=req.headers) as r:
            await r.read()
            return r.status, "", time.monotonic() - t0
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return 0, type(exc).__name__, time.monotonic() - t0


async def test_postgres_restart_under_webhook_load_503s_then_recovers_alone(
    pg_url: str, tmp_path: Path
) -> None:
    phones = list(await seed_active(pg_url, PATIENTS, flow="daily_mood"))
    twilio = RecordingTwilio()
    await twilio.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Proc(
        "server",
        bot_command("serve"),
        app_env(pg_url, twilio_base=twilio.base_url, port=port),
        tmp_path / "server.log",
    )
    outcomes: list[Outcome] = []
    health: list[tuple[str, int]] = []
    marks: dict[str, float] = {}
    stop_sending = asyncio.Event()
    queue = iter(enumerate(phones))
    db = Database(pg_url)
    try:
        await wait_healthy(server, port)
        server_pid = server.pid
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def sender() -> None:
                for i, phone in queue:
                    if stop_sending.is_set():
                        return
                    sid = f"SM{i:032x}"
                    t0 = time.monotonic()
                    status, error, seconds = await _post(http, base, sid, phone)
                    outcomes.append(Outcome(sid, phone, status, t0, seconds, error))
                    await asyncio.sleep(PAUSE_S)

            async def healthz(label: str) -> None:
                try:
                    async with http.get(base + "/healthz") as r:
                        health.append((label, r.status))
                except (aiohttp.ClientError, TimeoutError, OSError):
                    health.append((label, 0))

            senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
            try:
                await asyncio.sleep(WARMUP_S)
                marks["stop"] = time.monotonic()
                try:
                    await pg_ctl("stop")
                    marks["stopped"] = time.monotonic()
                    await asyncio.sleep(DOWN_S / 2)
                    await healthz("outage")
                    await asyncio.sleep(DOWN_S / 2)
                finally:
                    marks["start"] = time.monotonic()
                    await pg_start_and_wait()
                    marks["up"] = time.monotonic()
                # keep sending until the server answers 200 again, then a little longer

                async def answering() -> bool:
                    return any(o.status == 200 and o.started > marks["up"] for o in outcomes)

                with contextlib.suppress(AssertionError):  # asserted below, with the figures
                    await wait_until(answering, RECOVERY_LIMIT_S, "a 200", every=0.05)
                await asyncio.sleep(AFTER_RECOVERY_S)
            finally:
                stop_sending.set()
                await asyncio.gather(*senders)
            await healthz("after")

            # nothing half-written, before Twilio retries anything
            ok = {o.sid: o for o in outcomes if o.status == 200}
            refused = {o.sid: o for o in outcomes if o.status == 503}
            async with db.read() as s:
                inbound = dict(
                    (
                        await s.execute(
                            select(Message.provider_sid, Message.id).where(
                                Message.direction == Direction.IN
                            )
                        )
                    ).all()
                )
                answers = Counter(
                    (
                        await s.scalars(
                            select(Answer.message_id).where(Answer.message_id.is_not(None))
                        )
                    ).all()
                )
                values: dict[int | None, object] = dict(
                    (await s.execute(select(Answer.message_id, Answer.value))).all()
                )
                replied = set(
                    (
                        await s.scalars(
                            select(Message.phone).where(
                                Message.direction == Direction.OUT,
                                Message.body.like("Thank you%"),
                            )
                        )
                    ).all()
                )

            # Twilio retries every 503 with the same MessageSid: all go through now
            retried: Counter[int] = Counter()
            for o in refused.values():
                status, _error, _seconds = await _post(http, base, o.sid, o.phone)
                retried[status] += 1
        async with db.read() as s:
            after_inbound = Counter(
                (
                    await s.scalars(
                        select(Message.provider_sid).where(Message.direction == Direction.IN)
                    )
                ).all()
            )
            sent_phones = {o.phone for o in outcomes}
            open_checkins = (
                await s.scalars(select(Checkin.id).where(Checkin.status == CheckinStatus.ACTIVE))
            ).all()
        alive = server.alive() and server.pid == server_pid
        server_log = server.log()
    finally:
        stop_sending.set()
        with contextlib.suppress(Exception):
            if not await pg_ready():
                await pg_start_and_wait()
        server.stop()
        await db.dispose()
        await twilio.close()

    statuses = Counter(o.status for o in outcomes)
    outage = marks["up"] - marks["stop"]
    during = [o for o in outcomes if marks["stop"] <= o.started <= marks["up"]]
    first_ok = min(
        (o.started + o.seconds for o in outcomes if o.status == 200 and o.started > marks["up"]),
        default=None,
    )
    recovered_in = None if first_ok is None else first_ok - marks["up"]
    print(
        f"case 3: outage {outage:.1f} s (stop {marks['stopped'] - marks['stop']:.1f} s, "
        f"start {marks['up'] - marks['start']:.1f} s); {len(outcomes)} webhooks: "
        f"{dict(statuses)}; during the outage {dict(Counter(o.status for o in during))}; "
        f"slowest {max(o.seconds for o in outcomes):.2f} s; first 200 "
        f"{recovered_in if recovered_in is None else round(recovered_in, 2)} s after PostgreSQL "
        f"was up; healthz {health}; retries of the 503s {dict(retried)}"
    )

    # 200 or 503 only, each within the client timeout; the outage was seen
    assert set(statuses) <= {200, 503}, [o for o in outcomes if o.status not in (200, 503)][:5]
    assert statuses[503] > 0
    assert max(o.seconds for o in outcomes) < CLIENT_TIMEOUT_S
    assert outage < 5.0
    assert dict(health) == {"outage": 503, "after": 200}
    # nothing half-written
    assert all(sid in inbound for sid in ok), [s for s in ok if s not in inbound][:5]
    assert all(answers[inbound[sid]] == 1 and values[inbound[sid]] == 7 for sid in ok)
    assert {ok[sid].phone for sid in ok} <= replied
    assert not [sid for sid in refused if sid in inbound]
    # recovered by itself: the same process answers 200 again, and the retries go through
    assert alive, server_log[-3000:]
    assert recovered_in is not None and recovered_in < RECOVERY_LIMIT_S
    assert retried == Counter({200: len(refused)})
    assert set(after_inbound) == {o.sid for o in outcomes}
    assert set(after_inbound.values()) == {1}
    # each patient who wrote finished their check-in; the others are still waiting
    assert len(open_checkins) == PATIENTS - len(sent_phones)
    # and no request escaped the handlers (aiohttp logs those before answering 500)
    assert "Error handling request" not in server_log
