"""Case 1: a worker process on PostgreSQL is SIGKILLed at random points while check-ins are due.

The worker is the real one (``bot.server.run_worker`` through
``tests/reliability/worker_entry.py``: real ticks, the real ``twilio`` client with
``SMS_TRANSPORT=twilio`` and ``TWILIO_API_BASE`` pointing at a fake Twilio HTTP server in
this process), with short leases (3 s) and small batches (dispatch and outbox) so every life
of the worker is killed in the middle of claiming, starting or sending. Each life is killed
on its own progress, not on the clock: after a random number of its sends (at most its fair
share of what is left, so later lives still have work), plus a random fraction of its own
mean time per send. So a kill lands at the same kind of moment on a fast machine and on a
slow, busy one, where a fixed delay would only ever hit the first batch. After the kills
one clean worker drains what is left. Then:

- every life was killed with work in hand, after it had sent something;

- every check-in was started exactly once (active, ``started_at`` set, exactly one first
  message row each: a second start would have written a second row);
- every first message reached Twilio at least once, and nothing else did;
- duplicates (messages Twilio got twice) are exactly those whose send was in flight
  (claimed, POSTed, accepted, not yet recorded) at a kill, and at most one per kill;
- no outbound row is left pending or sending, and each row holds a SID Twilio issued for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.enums import CheckinStatus, Direction, MessageStatus
from db.models import Checkin, Message
from db.session import Database
from tests.conftest import drop_pg_database, new_pg_database, pg_url_for
from tests.reliability.support import (
    FULL,
    Proc,
    RecordingTwilio,
    app_env,
    seed_scheduled,
    unsent_and_scheduled,
    wait_until,
    worker_command,
)

pytestmark = pytest.mark.postgres

CHECKINS = 2000 if FULL else 1000
KILLS = 20
LEASE_S = 3.0
# each life of the victim: small batches on a short tick, so it is killed with work in hand
VICTIM_BATCH = 8
VICTIM_INTERVAL_S = 0.25
LIFE_TIMEOUT_S = 120.0
"""Only stops a hung life (one that never reaches its kill point): not a speed limit."""
DRAIN_TIMEOUT_S = 300.0
"""Only stops a hung run (the CI size drains in well under a minute): not a speed limit."""


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = new_pg_database(pg_template)
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


async def _in_flight(db: Database, twilio: RecordingTwilio) -> set[tuple[int, int]]:
    """Rows still ``sending`` whose current attempt already reached Twilio: (id, attempt)."""
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Message.id, Message.attempts, Message.phone, Message.updated_at).where(
                    Message.direction == Direction.OUT, Message.status == MessageStatus.SENDING
                )
            )
        ).all()
    arrivals: dict[str, list[datetime]] = {}
    for a in twilio.accepted:
        arrivals.setdefault(a.to, []).append(a.arrived)
    out = set()
    for mid, attempts, phone, claimed_at in rows:
        # claimed_at is when this attempt claimed the row; a POST after it is this attempt's
        if claimed_at is not None and any(t >= claimed_at for t in arrivals.get(phone, [])):
            out.add((mid, attempts))
    return out


async def test_worker_killed_20_times_mid_dispatch_starts_each_once_and_loses_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    expected = await seed_scheduled(pg_url, CHECKINS)
    twilio = RecordingTwilio()
    await twilio.start()
    db = Database(pg_url)
    env = app_env(pg_url, twilio_base=twilio.base_url)
    leases = ("--dispatch-lease", str(LEASE_S), "--outbox-lease", str(LEASE_S))
    victim = worker_command(
        *leases, "--interval", str(VICTIM_INTERVAL_S), "--batch", str(VICTIM_BATCH)
    )
    # the clean run: production batches, a 1 s tick
    cleaner = worker_command(*leases, "--interval", "1")
    procs: list[Proc] = []
    possible: set[tuple[int, int]] = set()
    caught: list[int] = []  # sends in flight (accepted, not recorded) at each kill
    # (sends in this life, fraction of a send's time after the last one, POSTs so far,
    # unsent, scheduled)
    kills: list[tuple[int, float, int, int, int]] = []
    started = time.monotonic()
    try:
        for i in range(KILLS):
            proc = Proc(f"victim{i}", victim, env, tmp_path / f"victim{i}.log")
            procs.append(proc)
            await proc.wait_for_log("worker started with ticks", 60)
            born, before = time.monotonic(), len(twilio.requests)
            # killed after a random number of its own sends, at most its fair share of what
            # is left (so the later lives still have work), then a random fraction of its
            # mean time per send (claims and starts included) later: progress, not a clock
            left = CHECKINS - len(set(r.to for r in twilio.requests))
            target = rng.randint(1, max(1, left // (KILLS - i + 1)))
            fraction = rng.random()
            while len(twilio.requests) - before < target:
                if not proc.alive():
                    raise AssertionError(f"victim{i} exited by itself:\n{proc.tail()}")
                if time.monotonic() - born > LIFE_TIMEOUT_S:
                    raise AssertionError(
                        f"victim{i} sent {len(twilio.requests) - before} of {target} messages "
                        f"in {LIFE_TIMEOUT_S:.0f} s (hung, not slow):\n{proc.tail()}"
                    )
                await asyncio.sleep(0.002)
            per_send = (time.monotonic() - born) / target
            await asyncio.sleep(fraction * per_send)
            assert proc.alive(), proc.tail()
            proc.kill()
            sent_in_life = len(twilio.requests) - before
            unsent, scheduled = await unsent_and_scheduled(db)
            window = await _in_flight(db, twilio)
            caught.append(len(window - possible))
            possible |= window
            kills.append((sent_in_life, fraction, len(twilio.requests), unsent, scheduled))
        final = Proc("final", cleaner, env, tmp_path / "final.log")
        procs.append(final)
        await final.wait_for_log("worker started with ticks", 60)

        async def drained() -> bool:
            return await unsent_and_scheduled(db) == (0, 0)

        await wait_until(drained, DRAIN_TIMEOUT_S, "the final worker to drain", every=0.25)
        assert final.stop() == 0, final.tail()
        elapsed = time.monotonic() - started

        async with db.read() as s:
            checkins = (
                await s.execute(select(Checkin.id, Checkin.status, Checkin.started_at))
            ).all()
            per_checkin = dict(
                (
                    await s.execute(
                        select(Message.checkin_id, func.count())
                        .where(Message.direction == Direction.OUT)
                        .group_by(Message.checkin_id)
                    )
                ).all()
            )
            messages = (
                await s.execute(
                    select(Message.phone, Message.status, Message.provider_sid).where(
                        Message.direction == Direction.OUT
                    )
                )
            ).all()
    finally:
        for proc in procs:
            proc.kill()
        await db.dispose()
        await twilio.close()

    sent = Counter(r.to for r in twilio.requests)
    duplicates = sum(n - 1 for n in sent.values())
    report = (
        f"case 1 (seed {seed}): {CHECKINS} check-ins, {len(kills)} SIGKILLs (after "
        f"{min(k[0] for k in kills)}-{max(k[0] for k in kills)} sends of each life), "
        f"{len(twilio.requests)} POSTs to Twilio, duplicates possible {len(possible)} / "
        f"happened {duplicates} (in flight at each kill: {caught}), "
        f"drained in {elapsed:.1f} s total"
    )
    print(report)
    print(
        "  kills (sends in the life, fraction of a send after the last, POSTs so far, unsent, "
        "scheduled):",
        [(s, round(f, 2), n, u, sc) for s, f, n, u, sc in kills],
    )

    # every kill hit a worker that had made progress and still had work in hand
    assert all(s >= 1 for s, *_ in kills), kills
    assert all(unsent + scheduled > 0 for *_, unsent, scheduled in kills), kills
    # every check-in started exactly once
    assert {cid for cid, _st, _at in checkins} == set(expected)
    assert {st for _cid, st, _at in checkins} == {CheckinStatus.ACTIVE}
    assert all(at is not None for _cid, _st, at in checkins)
    assert per_checkin == dict.fromkeys(expected, 1)
    # nothing left unsent; every row holds a SID Twilio issued to its phone
    assert len(messages) == CHECKINS
    assert {st for _p, st, _sid in messages} == {MessageStatus.QUEUED}
    issued = {(a.to, a.sid) for a in twilio.accepted}
    assert all((p, sid) in issued for p, _st, sid in messages)
    # every first message reached Twilio at least once, and only those
    assert set(sent) == set(expected.values())
    # duplicates: exactly the sends in flight at a kill, never more than one per kill
    assert duplicates == len(possible), (duplicates, sorted(possible))
    assert duplicates <= len(kills), report
    assert max(caught) <= 1, f"sends in flight at each kill: {caught}"
