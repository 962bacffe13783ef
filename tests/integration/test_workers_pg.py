"""Many worker processes on one PostgreSQL: every check-in starts once, every first message is
sent once, and a worker killed with SIGKILL mid-batch loses nothing and duplicates nothing.

The workers are real processes (``tests/integration/worker_proc.py``) claiming with
``FOR UPDATE SKIP LOCKED`` and leases; the transport stands in for Twilio and logs each
recipient, so "sent once" is checked on what left the process, not only in the database.

Nothing here asserts how fast the workers are: their ``--seconds`` and the waits below are
generous limits that only stop a hung test, each failing with a message saying what did not
happen (``bench/dispatch.py`` measures the speed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from bot.services.library_seed import seed_library
from db.enums import CheckinStatus, Direction, MessageStatus
from db.models import Checkin, Message, Patient
from db.session import Database
from tests.conftest import drop_pg_database, new_pg_database, pg_url_for

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
"""For a worker process to start and connect, or to claim its first batch."""
WORK_LIMIT_S = 300.0
"""A worker's ``--seconds``: it exits 2 if its work is not done by then (a hung run)."""


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = new_pg_database(pg_template)
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


async def _seed(url: str, n: int) -> dict[int, str]:
    """``n`` patients with one daily_mood check-in each, due a minute ago: {checkin id: phone}."""
    now = datetime.now(UTC)
    db = Database(url)
    try:
        async with db.write() as s:
            await seed_library(session=s, now=now)
            phones = [f"+1303{i:07d}" for i in range(n)]
            patient_ids = (
                await s.scalars(
                    insert(Patient).returning(Patient.id),
                    [
                        {
                            "first_name": "P",
                            "phone": phone,
                            "timezone": "UTC",
                            "language": "en",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for phone in phones
                    ],
                )
            ).all()
            by_patient = dict(zip(patient_ids, phones, strict=True))
            rows = (
                await s.execute(
                    insert(Checkin).returning(Checkin.id, Checkin.patient_id),
                    [
                        {
                            "patient_id": pid,
                            "flow_key": "daily_mood",
                            "status": CheckinStatus.SCHEDULED,
                            "due_at": now - timedelta(minutes=1),
                            "reminder_after_s": 4 * 3600,
                            "expiry_after_s": 24 * 3600,
                            "expires_at": now + timedelta(days=1),
                            "created_at": now,
                        }
                        for pid in patient_ids
                    ],
                )
            ).all()
        return {cid: by_patient[pid] for cid, pid in rows}
    finally:
        await db.dispose()


def _spawn(url: str, run_dir: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (run_dir / f"{name}.err").open("wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.worker_proc",
                "--url",
                url,
                "--run-dir",
                str(run_dir),
                "--name",
                name,
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _go(run_dir: Path, names: list[str]) -> None:
    _wait_for(
        lambda: all((run_dir / f"{n}.ready").exists() for n in names),
        START_TIMEOUT_S,
        "workers ready",
    )
    (run_dir / "go").touch()


_EXITS = {
    -1: f"still running {WORK_LIMIT_S + 60:.0f} s after the start, killed (hung)",
    2: f"its work was not done after --seconds {WORK_LIMIT_S:.0f} (hung, not slow)",
    3: "never saw the go file",
}


def _finish(procs: dict[str, subprocess.Popen[bytes]], run_dir: Path) -> None:
    deadline = time.monotonic() + WORK_LIMIT_S + 60
    for name, proc in procs.items():
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -1
        err = (run_dir / f"{name}.err").read_text(errors="replace")[-3000:]
        assert code == 0, f"worker {name} exited {code} ({_EXITS.get(code, 'an error')}):\n{err}"


def _sent(run_dir: Path, names: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in names:
        path = run_dir / f"{n}.sent"
        out[n] = path.read_text().split() if path.exists() else []
    return out


async def _final_state(
    url: str,
) -> tuple[dict[int, tuple[CheckinStatus, datetime | None]], Counter[int], list[Message]]:
    db = Database(url)
    try:
        async with db.read() as s:
            checkins = {
                cid: (status, started)
                for cid, status, started in (
                    await s.execute(select(Checkin.id, Checkin.status, Checkin.started_at))
                ).all()
            }
            per_checkin = Counter(
                {
                    cid: n
                    for cid, n in (
                        await s.execute(
                            select(Message.checkin_id, func.count())
                            .where(Message.direction == Direction.OUT)
                            .group_by(Message.checkin_id)
                        )
                    ).all()
                    if cid is not None
                }
            )
            messages = list(
                (await s.scalars(select(Message).where(Message.direction == Direction.OUT))).all()
            )
        return checkins, per_checkin, messages
    finally:
        await db.dispose()


def _assert_each_started_and_sent_once(
    url: str, expected: dict[int, str], sent: dict[str, list[str]]
) -> dict[int, tuple[CheckinStatus, datetime | None]]:
    checkins, per_checkin, messages = asyncio.run(_final_state(url))
    assert set(checkins) == set(expected)
    assert {
        cid for cid, (st, started) in checkins.items() if st is not CheckinStatus.ACTIVE
    } == set()
    assert all(started is not None for _st, started in checkins.values())
    # one first message (daily_mood asks one question) per check-in, no more, no less
    assert set(per_checkin) == set(expected) and set(per_checkin.values()) == {1}
    assert len(messages) == len(expected)
    assert {m.status for m in messages} == {MessageStatus.SENT}
    assert len({m.provider_sid for m in messages}) == len(messages)
    # and each left a worker exactly once, to the right patient
    everything = Counter(phone for lines in sent.values() for phone in lines)
    assert everything == Counter(expected.values())
    return checkins


def test_three_worker_processes_start_2000_checkins_exactly_once(
    pg_url: str, tmp_path: Path
) -> None:
    expected = asyncio.run(_seed(pg_url, 2000))
    names = ["w1", "w2", "w3"]
    procs = {
        n: _spawn(pg_url, tmp_path, n, "--seconds", str(WORK_LIMIT_S), "--batch", "50")
        for n in names
    }
    _go(tmp_path, names)
    _finish(procs, tmp_path)
    sent = _sent(tmp_path, names)
    _assert_each_started_and_sent_once(pg_url, expected, sent)
    # the work really was shared: at least two processes sent first messages
    assert sum(1 for lines in sent.values() if lines) >= 2, {n: len(v) for n, v in sent.items()}


async def _leases(url: str, ids: list[int]) -> dict[int, tuple[CheckinStatus, datetime | None]]:
    db = Database(url)
    try:
        async with db.read() as s:
            rows = await s.execute(
                select(Checkin.id, Checkin.status, Checkin.lease_until).where(Checkin.id.in_(ids))
            )
            return {cid: (status, lease) for cid, status, lease in rows.all()}
    finally:
        await db.dispose()


def test_worker_killed_mid_batch_loses_nothing_and_starts_nothing_twice(
    pg_url: str, tmp_path: Path
) -> None:
    expected = asyncio.run(_seed(pg_url, 300))
    claimed_log = tmp_path / "victim.claimed"
    # the victim holds its first batch of 100 inside the start transaction for ~60 s (0.6 s a
    # row), so the kill below lands inside it however slow the machine; its claim's lease is
    # 4 s, which the survivors then have to wait out
    victim = _spawn(
        pg_url,
        tmp_path,
        "victim",
        "--seconds",
        str(WORK_LIMIT_S),
        "--batch",
        "100",
        "--lease",
        "4",
        "--slow",
        "0.6",
        "--claimed-log",
        str(claimed_log),
    )
    _go(tmp_path, ["victim"])
    _wait_for(
        lambda: claimed_log.exists() and claimed_log.read_text().count("\n") >= 100,
        START_TIMEOUT_S,
        "the victim to claim a batch",
    )
    claimed = [int(line) for line in claimed_log.read_text().split()]
    assert victim.poll() is None, "the victim finished its batch before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    held = asyncio.run(_leases(pg_url, claimed))
    assert len(claimed) == 100 and set(held) == set(claimed)
    # nothing of the killed transaction survived: all still scheduled, under the victim's lease
    assert {status for status, _lease in held.values()} == {CheckinStatus.SCHEDULED}
    leases = {lease for _status, lease in held.values()}
    assert len(leases) == 1
    [lease_until] = leases
    assert lease_until is not None

    survivors = ["s1", "s2"]
    (tmp_path / "go").unlink()
    # the survivors keep the default lease (2 minutes): none of their own claims runs out
    # while they work, however slow the machine, so only the victim's rows come back
    procs = {n: _spawn(pg_url, tmp_path, n, "--seconds", str(WORK_LIMIT_S)) for n in survivors}
    _go(tmp_path, survivors)
    _finish(procs, tmp_path)
    sent = _sent(tmp_path, [*survivors, "victim"])
    assert sent["victim"] == []
    checkins = _assert_each_started_and_sent_once(pg_url, expected, sent)
    # the victim's rows were only taken once its lease had run out
    for cid in claimed:
        started = checkins[cid][1]
        assert started is not None and started >= lease_until, (cid, started, lease_until)
