"""Case 3's run, shared by ``test_db_restart.py`` (which asserts what happened) and
``bench/db_restart.py`` (which prints how long it took).

The real server (``python -m bot serve``, signatures on, the fake Twilio in this process)
answers patients replying "7" to a daily-mood check-in, one reply each, from several
concurrent senders, while the shared PostgreSQL cluster is stopped (``pg_ctlcluster ...
stop``, fast mode) and started again. The run moves through phases on *events*, never on
the clock, so it means the same on a fast machine and on a slow, busy one:

- ``warmup``: until ``WARMUP_OK`` webhooks were answered 200;
- ``stopping``: while ``pg_ctlcluster stop`` runs;
- ``down``: the cluster is stopped; ``/healthz`` is asked once, and the senders go on until
  ``DOWN_REFUSED`` webhooks sent in this phase were answered 503 (and, for the benchmark,
  at least ``hold_s`` more);
- ``starting``: while ``pg_ctlcluster start`` runs and until ``pg_isready`` says yes;
- ``after``: until ``AFTER_OK`` webhooks sent in this phase were answered 200 by the same
  server process; then ``/healthz`` is polled until it answers 200.

Each phase sends at most ``BUDGET[phase]`` requests (a sender waits for the next phase once
its phase's budget is spent), so the patients never run out, whatever the speed of the
machine. Every wait is bounded by a generous timeout that only stops a hung run; it fails
with a message saying what did not happen. Then, before anything is retried, the database
is read; then every 503 is retried with its ``MessageSid`` (as Twilio does) and the database
read again. The cluster is always started again in a ``finally`` block, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy import select

from db.enums import CheckinStatus, Direction
from db.models import Answer, Checkin, Message
from db.session import Database
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
)

PATIENTS = 900
SENDERS = 6
PAUSE_S = 0.04  # per sender between requests: at most ~150 requests/s in all
PHASES = ("warmup", "stopping", "down", "starting", "after")
BUDGET = {"warmup": 150, "stopping": 150, "down": 100, "starting": 200, "after": 300}
"""The most requests sent in each phase, ``PATIENTS`` in all. The server reconnects on the
next request once PostgreSQL is back (a disconnect invalidates its pool), so recovery is
counted in requests, not seconds: ``after`` allows 300 before the run fails."""
WARMUP_OK = 20
DOWN_REFUSED = 20
AFTER_OK = 20
CLIENT_TIMEOUT_S = 60.0
"""Only for a request that never gets an answer (recorded as status 0): not a speed limit."""
GATE_TIMEOUT_S = 120.0
"""How long a phase may wait for its event before the run fails as hung."""

assert sum(BUDGET.values()) <= PATIENTS


@dataclass(frozen=True, slots=True)
class Outcome:
    sid: str
    phone: str
    phase: str  # the phase in which it was sent
    status: int  # 0: no HTTP answer (connection error or client timeout)
    started: float  # time.monotonic()
    finished: float
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class DbState:
    """What the database holds, read once the senders stopped (before any retry)."""

    inbound: dict[str, int]  # MessageSid -> inbound message id
    answers: Counter[int]  # inbound message id -> answers recorded from it
    values: dict[int | None, object]  # inbound message id -> the answer's value
    replied: set[str]  # phones that got the "Thank you" reply


@dataclass
class RestartRun:
    outcomes: list[Outcome]
    marks: dict[str, float]  # time.monotonic() when each phase began, and "stopped"/"up"
    health_down: int  # /healthz while the cluster was stopped
    health_after: list[int]  # /healthz polled afterwards, until 200
    before_retries: DbState
    retried: Counter[int]  # statuses of the retried 503s
    after_inbound: Counter[str]  # MessageSid -> inbound rows, after the retries
    open_checkins: int
    same_process: bool  # the server that started the run is the one that answered after
    server_log: str
    log_path: Path
    sent_phones: set[str] = field(default_factory=set)

    def in_phase(self, *phases: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.phase in phases]


class _Phases:
    """The current phase and what each phase has sent; senders take a ticket per request."""

    def __init__(self) -> None:
        self.name = PHASES[0]
        self.taken: Counter[str] = Counter()
        self.closed = False
        self._changed = asyncio.Event()

    def enter(self, name: str) -> None:
        self.name = name
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def ticket(self) -> str | None:
        """The phase to send the next request in, once its budget allows; None: stop."""
        while not self.closed:
            if self.taken[self.name] < BUDGET[self.name]:
                self.taken[self.name] += 1
                return self.name
            await self._changed.wait()
        return None


async def _post(
    http: aiohttp.ClientSession, base: str, sid: str, phone: str
) -> tuple[int, str, float, float]:
    req = signed(base, "/twilio/sms", sms_params(sid, phone, "7"))
    t0 = time.monotonic()
    try:
        async with http.post(base + "/twilio/sms", data=req.body, headers=req.headers) as r:
            await r.read()
            return r.status, "", t0, time.monotonic()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return 0, type(exc).__name__, t0, time.monotonic()


async def _read_state(db: Database) -> DbState:
    async with db.read() as s:
        inbound = {
            str(sid): int(mid)
            for sid, mid in (
                await s.execute(
                    select(Message.provider_sid, Message.id).where(
                        Message.direction == Direction.IN
                    )
                )
            ).all()
        }
        answers = Counter(
            mid
            for mid in (
                await s.scalars(select(Answer.message_id).where(Answer.message_id.is_not(None)))
            ).all()
            if mid is not None
        )
        values: dict[int | None, object] = {
            mid: value for mid, value in (await s.execute(select(Answer.message_id, Answer.value)))
        }
        replied = set(
            (
                await s.scalars(
                    select(Message.phone).where(
                        Message.direction == Direction.OUT, Message.body.like("Thank you%")
                    )
                )
            ).all()
        )
    return DbState(inbound, answers, values, replied)


async def run_restart(pg_url: str, tmp_path: Path, *, hold_s: float = 0.0) -> RestartRun:
    """Run case 3 against the migrated database ``pg_url``; ``hold_s``: keep the cluster
    down at least this long after the ``down`` phase's 503s (the benchmark's knob)."""
    phones = list(await seed_active(pg_url, PATIENTS, flow="daily_mood"))
    twilio = RecordingTwilio()
    await twilio.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    server = Proc(
        "server",
        bot_command("serve"),
        app_env(pg_url, twilio_base=twilio.base_url, port=port),
        log_path,
    )
    outcomes: list[Outcome] = []
    marks: dict[str, float] = {}
    phases = _Phases()
    queue = iter(enumerate(phones))
    db = Database(pg_url)
    health_down = -1
    health_after: list[int] = []

    def count(phase: str, status: int) -> int:
        return sum(1 for o in outcomes if o.phase == phase and o.status == status)

    def progress() -> str:
        by_phase = {p: dict(Counter(o.status for o in outcomes if o.phase == p)) for p in PHASES}
        return f"statuses by phase {by_phase}; server log:\n{server.tail()}"

    async def gate(phase: str, status: int, want: int, what: str) -> None:
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while count(phase, status) < want:
            if not server.alive():
                raise AssertionError(f"the server exited while waiting for {what}; {progress()}")
            if (
                phases.taken[phase] >= BUDGET[phase]
                and len([o for o in outcomes if o.phase == phase]) >= BUDGET[phase]
            ):
                raise AssertionError(
                    f"all {BUDGET[phase]} requests of phase {phase!r} were answered without "
                    f"{what}; {progress()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {what} within {GATE_TIMEOUT_S:.0f} s (a hung run, not a slow one); "
                    + progress()
                )
            await asyncio.sleep(0.02)

    try:
        await wait_healthy(server, port)
        server_pid = server.pid
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def sender() -> None:
                while (phase := await phases.ticket()) is not None:
                    item = next(queue, None)
                    if item is None:
                        return
                    i, phone = item
                    sid = f"SM{i:032x}"
                    status, error, t0, t1 = await _post(http, base, sid, phone)
                    outcomes.append(Outcome(sid, phone, phase, status, t0, t1, error))
                    await asyncio.sleep(PAUSE_S)

            async def healthz() -> int:
                try:
                    async with http.get(base + "/healthz") as r:
                        return r.status
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return 0

            marks["warmup"] = time.monotonic()
            senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
            try:
                await gate("warmup", 200, WARMUP_OK, f"{WARMUP_OK} webhooks answered 200")
                try:
                    phases.enter("stopping")
                    marks["stopping"] = time.monotonic()
                    await pg_ctl("stop")
                    phases.enter("down")
                    marks["down"] = time.monotonic()
                    health_down = await healthz()
                    await gate(
                        "down",
                        503,
                        DOWN_REFUSED,
                        f"{DOWN_REFUSED} webhooks answered 503 while PostgreSQL was stopped",
                    )
                    if hold_s > 0:
                        await asyncio.sleep(max(0.0, marks["down"] + hold_s - time.monotonic()))
                finally:
                    phases.enter("starting")
                    marks["starting"] = time.monotonic()
                    await pg_start_and_wait()
                    phases.enter("after")
                    marks["after"] = time.monotonic()
                await gate(
                    "after",
                    200,
                    AFTER_OK,
                    f"{AFTER_OK} webhooks answered 200 after PostgreSQL was back (the server "
                    "was not restarted)",
                )
            finally:
                phases.close()
                await asyncio.gather(*senders, return_exceptions=True)
            marks["end"] = time.monotonic()
            # after the webhooks, the health check says so too (polled: one slow ping is
            # not what this is about)
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while not health_after or health_after[-1] != 200:
                if time.monotonic() > deadline:
                    break
                if health_after:
                    await asyncio.sleep(0.2)
                health_after.append(await healthz())

            # nothing half-written, before Twilio retries anything
            before = await _read_state(db)
            # Twilio retries every 503 with the same MessageSid
            retried: Counter[int] = Counter()
            for o in outcomes:
                if o.status == 503:
                    retried[(await _post(http, base, o.sid, o.phone))[0]] += 1
        async with db.read() as s:
            after_inbound = Counter(
                str(sid)
                for sid in (
                    await s.scalars(
                        select(Message.provider_sid).where(Message.direction == Direction.IN)
                    )
                ).all()
            )
            open_checkins = len(
                (
                    await s.scalars(
                        select(Checkin.id).where(Checkin.status == CheckinStatus.ACTIVE)
                    )
                ).all()
            )
        same_process = server.alive() and server.pid == server_pid
        server_log = server.log()
    finally:
        phases.close()
        with contextlib.suppress(Exception):
            if not await pg_ready():
                await pg_start_and_wait()
        server.stop()
        await db.dispose()
        await twilio.close()
    return RestartRun(
        outcomes=outcomes,
        marks=marks,
        health_down=health_down,
        health_after=health_after,
        before_retries=before,
        retried=retried,
        after_inbound=after_inbound,
        open_checkins=open_checkins,
        same_process=same_process,
        server_log=server_log,
        log_path=log_path,
        sent_phones={o.phone for o in outcomes},
    )
