"""The direct reply path (driver SQL) against the ORM path: same rows, and every case it
hands over leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from bot.services import direct_reply
from bot.services.direct_reply import Replied
from db.direct import PgDirect, SqliteDirect, sqlite_path
from db.enums import CheckinStatus, Direction
from db.models import Answer, Checkin, Escalation, Message, Patient, Score
from db.session import Database
from tests.conftest import _truncate_all, pg_url_for
from tests.web.harness import Harness, harness, new_sid

TryReply = Callable[..., Awaitable[Replied | None]]


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "test.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def pg_url(pg_shared: str) -> str:
    url = pg_url_for(pg_shared)
    asyncio.run(_truncate_all(url))
    return url


@pytest.fixture
async def hs(sqlite_url: str):  # type: ignore[no-untyped-def]
    """The harness on SQLite only, for what only SQLite has."""
    async with harness(sqlite_url) as hh:
        yield hh


@pytest.fixture
async def hp(pg_url: str):  # type: ignore[no-untyped-def]
    """The harness on PostgreSQL only, for what only PostgreSQL has."""
    async with harness(pg_url) as hh:
        yield hh


class Spy:
    """Counts what the direct path took, and turns it off for some phone numbers."""

    def __init__(self, real: TryReply, *, off_for: set[str]) -> None:
        self.real = real
        self.off_for = off_for
        self.taken: list[str] = []
        self.handed_over: list[str] = []

    async def __call__(
        self, db: Any, settings: Any, *, sid: str, phone: str, body: str, now: datetime
    ) -> Any:
        if phone in self.off_for:
            return None
        replied = await self.real(db, settings, sid=sid, phone=phone, body=body, now=now)
        (self.taken if replied is not None else self.handed_over).append(body)
        return replied


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    s = Spy(direct_reply.try_reply, off_for=set())
    monkeypatch.setattr(direct_reply, "try_reply", s)
    return s


async def _rows(h: Harness, patient: Patient) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a patient's conversations wrote, with ids replaced by their order."""
    async with h.db.read() as s:
        checkins = (
            await s.scalars(
                select(Checkin).where(Checkin.patient_id == patient.id).order_by(Checkin.id)
            )
        ).all()
        messages = (
            await s.scalars(
                select(Message).where(Message.patient_id == patient.id).order_by(Message.id)
            )
        ).all()
        c_ids = [c.id for c in checkins]
        m_ids = [m.id for m in messages]
        answers = (
            await s.scalars(select(Answer).where(Answer.checkin_id.in_(c_ids)).order_by(Answer.id))
        ).all()
        scores = (
            await s.scalars(select(Score).where(Score.patient_id == patient.id).order_by(Score.id))
        ).all()
        escalations = (
            await s.scalars(
                select(Escalation)
                .where(Escalation.patient_id == patient.id)
                .order_by(Escalation.id)
            )
        ).all()

    def c(i: int | None) -> int | None:
        return None if i is None else c_ids.index(i)

    def m(i: int | None) -> int | None:
        return None if i is None else m_ids.index(i)

    return {
        "checkins": [
            (
                x.flow_key,
                x.flow_version,
                x.status,
                x.outcome,
                x.state,
                x.started_at,
                x.completed_at,
                x.lease_until,
                x.reminder_at,
                x.expires_at,
                c(x.previous_id),
            )
            for x in checkins
        ],
        "messages": [
            (
                x.direction,
                c(x.checkin_id),
                x.phone,
                x.body,
                x.purpose,
                x.status,
                x.segments,
                x.encoding,
                x.send_after,
                x.attempts,
                x.lease_until,
                x.sent_at,
                x.created_at,
                x.provider_sid is None,
                x.user_id,
                x.error_code,
            )
            for x in messages
        ],
        "answers": [
            (c(x.checkin_id), m(x.message_id), x.question_key, x.raw_text, x.value, x.created_at)
            for x in answers
        ],
        "scores": [
            (c(x.checkin_id), x.instrument, x.total, x.band, x.flags, x.complete, x.created_at)
            for x in scores
        ],
        "escalations": [
            (
                c(x.checkin_id),
                m(x.message_id),
                x.severity,
                x.severity_rank,
                x.reason,
                x.summary,
                x.status,
                x.sla_due_at,
                x.page_count,
                x.created_at,
            )
            for x in escalations
        ],
    }


# Digits, labels, number words, an unparseable reply (re-asked), then item 9 positive: the
# PHQ-9 ends with escalations and hands over to the C-SSRS screener, which is answered too.
SCRIPT = [
    "3",
    "several days",
    "banana",
    "2",
    "nearly every day",
    "three",
    "1",
    "0",
    "2",
    "1",
    "no",
    "no",
]
# Item 9 at 0: the PHQ-9 ends in the direct path itself.
QUIET_SCRIPT = ["0", "1", "not at all", "0", "1", "0", "0", "2", "0"]


@pytest.mark.parametrize("script", [SCRIPT, QUIET_SCRIPT], ids=["handover", "ends"])
async def test_direct_and_orm_paths_write_the_same_rows(
    h: Harness, spy: Spy, script: list[str]
) -> None:
    direct = await h.patient()
    orm = await h.patient()
    spy.off_for.add(orm.phone)
    for p in (direct, orm):
        await h.start(p, "phq9")
    for body in script:
        # the ORM path first: it parses the C-SSRS flow, which the direct path then finds
        # in this process's cache (the first hand-over of a process goes the ORM way)
        for p in (orm, direct):
            resp = await h.sms(p.phone, body)
            assert resp.status == 200
    a, b = await _rows(h, direct), await _rows(h, orm)
    # the phone is the only difference (the patients' own numbers)
    a["messages"] = [row[:2] + row[3:] for row in a["messages"]]
    b["messages"] = [row[:2] + row[3:] for row in b["messages"]]
    for table in a:
        assert a[table] == b[table], table
    assert len(a["answers"]) >= 9 and a["scores"]
    # every reply, the one that hands over to the C-SSRS screener included
    assert len(spy.taken) == len(script)
    if script is SCRIPT:
        assert a["escalations"], "item 9 positive escalates"
        assert [row[0] for row in a["checkins"]] == ["phq9", "cssrs_screen"]
    else:
        assert a["checkins"][0][2] is CheckinStatus.COMPLETED


async def test_redelivery_through_the_direct_path_changes_nothing(h: Harness, spy: Spy) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    sid = new_sid()
    for _ in range(3):
        assert (await h.sms(p.phone, "2", sid=sid)).status == 200
    assert len(spy.taken) == 3  # each answered by the direct path: once written, twice found
    async with h.db.read() as s:
        inbound = (await s.scalars(select(Message).where(Message.direction == Direction.IN))).all()
        answers = (await s.scalars(select(Answer))).all()
    assert len(inbound) == 1 and len(answers) == 1
    assert answers[0].message_id == inbound[0].id


@pytest.mark.parametrize("due", ["before", "after"], ids=["due-before", "due-meanwhile"])
async def test_a_waiting_checkin_is_started_by_the_orm_path(h: Harness, spy: Spy, due: str) -> None:
    """Ending a conversation while another check-in is due: the ORM path starts the next
    one. Due only after this process remembered the conversation, it is the write's own
    check that notices."""
    p = await h.patient()
    await h.start(p, "phq2")

    async def add_due() -> None:
        async with h.db.write() as s:
            s.add(
                Checkin(
                    patient_id=p.id,
                    flow_key="phq2",
                    status=CheckinStatus.SCHEDULED,
                    due_at=h.clock.now() - timedelta(minutes=5),
                    created_at=h.clock.now(),
                )
            )

    if due == "before":
        await add_due()
    await h.sms(p.phone, "0")
    assert spy.taken == ["0"]
    if due == "after":
        await add_due()
    await h.sms(p.phone, "0")  # ends the PHQ-2 while another one is due
    assert spy.handed_over == ["0"]
    checkins = await h.checkins(p)
    assert [c.status for c in checkins] == [CheckinStatus.COMPLETED, CheckinStatus.ACTIVE]
    async with h.db.read() as s:
        assert len((await s.scalars(select(Answer))).all()) == 2  # each answer once


async def test_a_flow_this_process_has_not_parsed_goes_through_the_orm_path(
    h: Harness, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await h.patient()
    await h.start(p, "phq9")
    monkeypatch.setattr(direct_reply, "cached", lambda key, version, checksum: None)
    await h.sms(p.phone, "1")
    assert spy.handed_over == ["1"]
    monkeypatch.undo()
    monkeypatch.setattr(direct_reply, "try_reply", spy)
    await h.sms(p.phone, "2")
    assert spy.taken == ["2"]
    async with h.db.read() as s:
        answers = (await s.scalars(select(Answer.value).order_by(Answer.id))).all()
    assert answers == [1, 2]


async def test_senders_outside_a_conversation_are_left_to_the_orm_path(
    h: Harness, spy: Spy
) -> None:
    idle = await h.patient()
    await h.sms(idle.phone, "hello")
    await h.sms("+12025550987", "hello")  # unknown number
    stopped = await h.patient()
    await h.start(stopped, "phq9")
    async with h.db.write() as s:
        row = await s.get(Patient, stopped.id)
        assert row is not None
        row.opted_out_at = h.clock.now()
    await h.sms(stopped.phone, "2")
    assert spy.taken == [] and len(spy.handed_over) == 3
    async with h.db.read() as s:
        assert (await s.scalars(select(Answer))).all() == []


async def test_sqlite_gives_up_at_once_while_another_process_writes(hs: Harness) -> None:
    h = hs
    p = await h.patient()
    await h.start(p, "phq9")
    path = sqlite_path(h.db.url)
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        replied = await direct_reply.try_reply(
            h.db, h.settings, sid=new_sid(), phone=p.phone, body="1", now=h.clock.now()
        )
        assert replied is None
    finally:
        other.execute("ROLLBACK")
        other.close()
    # nothing was written, and the next reply goes through once the lock is free
    replied = await direct_reply.try_reply(
        h.db, h.settings, sid=new_sid(), phone=p.phone, body="1", now=h.clock.now()
    )
    assert replied is not None and not replied.duplicate and len(replied.claimed) == 1
    async with h.db.read() as s:
        assert len((await s.scalars(select(Answer))).all()) == 1


@pytest.mark.postgres
async def test_postgres_unreachable_on_the_direct_pool_falls_back(hp: Harness, spy: Spy) -> None:
    h = hp
    assert h.db.pg_direct is not None
    await h.db.pg_direct.close()
    broken = PgDirect(h.db.engine, {"port": 1, "timeout": 1})
    h.db.pg_direct = broken
    p = await h.patient()
    await h.start(p, "phq9")
    resp = await h.sms(p.phone, "3")
    assert resp.status == 200
    assert spy.handed_over == ["3"]
    async with h.db.read() as s:
        assert (await s.scalars(select(Answer.value))).all() == [3]


async def test_a_reply_another_process_handled_is_read_again(h: Harness, spy: Spy) -> None:
    """This process remembers the state it wrote (PostgreSQL); another process moving the
    conversation on makes that memory stale, and the write notices and reads again."""
    p = await h.patient()
    await h.start(p, "phq9")
    other = Database(h.db.url)  # a second server process on the same database
    try:
        await h.sms(p.phone, "1")  # this process writes q1 and remembers the state
        replied = await direct_reply.try_reply(
            other, h.settings, sid=new_sid(), phone=p.phone, body="2", now=h.clock.now()
        )
        assert replied is not None and not replied.duplicate  # q2, by the other process
        await h.sms(p.phone, "3")  # q3 here: the remembered state is q1's
    finally:
        await other.dispose()
    async with h.db.read() as s:
        answers = (
            await s.execute(select(Answer.question_key, Answer.value).order_by(Answer.id))
        ).all()
    assert [tuple(a) for a in answers] == [("q1", 1), ("q2", 2), ("q3", 3)]
    assert spy.taken == ["1", "2", "3"]


async def test_a_patient_opted_out_meanwhile_is_never_written_to(h: Harness, spy: Spy) -> None:
    """Opted out by other means (Twilio's 21610), with the check-in still active: the next
    reply is neither answered nor recorded as an answer, remembered state or not."""
    p = await h.patient()
    await h.start(p, "phq9")
    await h.sms(p.phone, "1")
    async with h.db.write() as s:
        row = await s.get(Patient, p.id)
        assert row is not None
        row.opted_out_at = h.clock.now()
    before = len(h.twilio.sent_to(p.phone))
    await h.sms(p.phone, "2")
    assert spy.taken == ["1"] and spy.handed_over == ["2"]
    async with h.db.read() as s:
        assert (await s.scalars(select(Answer.value))).all() == [1]
    assert len(h.twilio.sent_to(p.phone)) == before


async def test_replies_arriving_together_share_one_sqlite_transaction(hs: Harness) -> None:
    h = hs
    assert h.db.sqlite_direct is not None
    patients = [await h.patient() for _ in range(12)]
    for p in patients:
        await h.start(p, "phq9")
    commits: list[str] = []
    conn = h.db.sqlite_direct.connection()
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    try:
        results = await asyncio.gather(
            *(
                direct_reply.try_reply(
                    h.db, h.settings, sid=new_sid(), phone=p.phone, body="2", now=h.clock.now()
                )
                for p in patients
            )
        )
    finally:
        conn.set_trace_callback(None)
    assert all(r is not None and len(r.claimed) == 1 for r in results)
    assert len(commits) == 1
    async with h.db.read() as s:
        assert len((await s.scalars(select(Answer))).all()) == 12


async def test_one_failing_unit_of_a_group_rolls_back_only_itself(hs: Harness) -> None:
    h = hs
    assert h.db.sqlite_direct is not None
    direct = h.db.sqlite_direct
    now = "2026-03-02 15:00:00.000000"

    def insert(name: str) -> Callable[[sqlite3.Connection], str]:
        def work(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO patients (first_name, phone, timezone, language, status,"
                " created_at, updated_at) VALUES (?, ?, 'UTC', 'en', 'active', ?, ?)",
                (name, f"+1202555{len(name):04d}", now, now),
            )
            if name == "bad":
                raise ValueError("this unit fails after its insert")
            return name

        return work

    outcomes = await asyncio.gather(
        direct.transact(insert("ok"), h.db.writer_lock),
        direct.transact(insert("bad"), h.db.writer_lock),
        direct.transact(insert("fine"), h.db.writer_lock),
        return_exceptions=True,
    )
    assert outcomes[0] == "ok" and outcomes[2] == "fine"
    assert isinstance(outcomes[1], ValueError)
    async with h.db.read() as s:
        names = (await s.scalars(select(Patient.first_name).order_by(Patient.id))).all()
    assert names == ["ok", "fine"]


@pytest.mark.postgres
async def test_the_postgres_read_looks_only_at_the_patients_own_checkins(hp: Harness) -> None:
    """The plan the direct pool uses (a generic one) must not find a waiting check-in by
    scanning every scheduled one: with statistics saying few are scheduled, the
    planner chose an index on the statuses (ix_checkins_status_reminder_at), a scan per
    reply that grows with the backlog."""
    h = hp
    assert h.db.pg_direct is not None
    pool = await h.db.pg_direct.pool()
    async with pool.acquire() as conn:
        # a clinic's worth of patients, each in a conversation, and nothing scheduled
        await conn.execute(
            "INSERT INTO patients (first_name, phone, timezone, language, status, created_at,"
            " updated_at) SELECT 'P', '+1202' || lpad(i::text, 7, '0'), 'UTC', 'en', 'active',"
            " now(), now() FROM generate_series(1, 3000) i"
        )
        await conn.execute(
            "INSERT INTO checkins (patient_id, flow_key, status, due_at, started_at, created_at)"
            " SELECT id, 'phq9', 'active', now(), now(), now() FROM patients"
        )
        await conn.execute("ANALYZE patients")
        await conn.execute("ANALYZE checkins")
        await conn.execute(
            "PREPARE direct_read(text, timestamptz, text) AS " + direct_reply._PG_READ
        )
        try:
            plan = "\n".join(
                r[0] for r in await conn.fetch("EXPLAIN EXECUTE direct_read('+1', now(), 'SM')")
            )
        finally:
            await conn.execute("DEALLOCATE direct_read")
    waiting = plan[plan.index("SubPlan") :]
    # found through the patient (an index on patient_id), never through the statuses
    assert "Index Cond: ((patient_id = c.patient_id)" in waiting, plan
    assert "Seq Scan on checkins" not in plan, plan


@pytest.mark.parametrize("every", [5, 10_000], ids=["checkpointed", "never"])
async def test_the_direct_connection_keeps_the_wal_bounded(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, every: int
) -> None:
    """Its commits never checkpoint on the loop's thread; a checkpoint runs in a thread
    every so many commits, so a web process that writes only here (no worker) does not
    grow the WAL without end. The "never" run shows what the checkpoints prevent."""
    monkeypatch.setattr(SqliteDirect, "CHECKPOINT_EVERY", every)
    db = Database(sqlite_url)
    try:
        direct = db.sqlite_direct
        assert direct is not None
        now = "2026-03-02 15:00:00.000000"
        for i in range(400):

            def work(conn: sqlite3.Connection, i: int = i) -> None:
                conn.execute(
                    "INSERT INTO patients (first_name, phone, timezone, language, status,"
                    " created_at, updated_at) VALUES (?, ?, 'UTC', 'en', 'active', ?, ?)",
                    ("P" * 60, f"+1202{i:07d}", now, now),
                )

            await direct.transact(work, db.writer_lock)
        wal = await asyncio.to_thread(os.path.getsize, f"{sqlite_path(sqlite_url)}-wal")
    finally:
        await db.dispose()
    if every == 5:
        assert wal < 1_000_000, wal
    else:
        assert wal > 2_000_000, wal


async def test_a_writer_that_cannot_open_its_file_fails_its_callers(tmp_path: Path) -> None:
    """The connection opens lazily inside the group's flush; if it cannot (a missing
    directory, a full disk) every caller gets the error (the reply then takes the ORM path,
    which answers 503), none waits forever."""
    direct = SqliteDirect(str(tmp_path / "missing" / "x.db"))
    lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def writer_lock() -> AsyncIterator[None]:
        async with lock:
            yield

    def work(conn: sqlite3.Connection) -> int:
        return 1

    outcomes = await asyncio.wait_for(
        asyncio.gather(
            direct.transact(work, writer_lock),
            direct.transact(work, writer_lock),
            return_exceptions=True,
        ),
        timeout=5,
    )
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes), outcomes


class GroupSpy:
    """Records the size of each PostgreSQL write group; the first group waits a moment so
    that replies arriving meanwhile form the next one together."""

    def __init__(self, real: Callable[..., Awaitable[Any]]) -> None:
        self.real = real
        self.sizes: list[int] = []
        self.sids: list[list[str]] = []
        self.phones: list[list[str]] = []

    async def __call__(self, conn: Any, writes: Any) -> Any:
        self.sizes.append(len(writes))
        self.sids.append([w.m.sid for w in writes])
        self.phones.append([w.m.phone for w in writes])
        if len(self.sizes) == 1:
            await asyncio.sleep(0.05)
        return await self.real(conn, writes)


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> GroupSpy:
    g = GroupSpy(direct_reply._pg_write_group)
    monkeypatch.setattr(direct_reply, "_pg_write_group", g)
    return g


@pytest.mark.postgres
@pytest.mark.parametrize("script", [SCRIPT, QUIET_SCRIPT], ids=["handover", "ends"])
async def test_replies_written_together_on_postgres_are_the_orm_paths_rows(
    hp: Harness, spy: Spy, groups: GroupSpy, script: list[str]
) -> None:
    """Replies ready at the same moment share one statement (``_PG_WRITE``), which
    must write for each exactly what the ORM path writes for one, hand-overs included."""
    h = hp
    orm = await h.patient()
    spy.off_for.add(orm.phone)
    together = [await h.patient() for _ in range(4)]
    for p in (orm, *together):
        await h.start(p, "phq9")
    for body in script:
        assert (await h.sms(orm.phone, body)).status == 200
        groups.sizes.clear()
        answers = await asyncio.gather(*(h.sms(p.phone, body) for p in together))
        assert [r.status for r in answers] == [200] * len(together)
        assert sum(groups.sizes) == len(together) and max(groups.sizes) > 1, groups.sizes
    expected = await _rows(h, orm)
    expected["messages"] = [row[:2] + row[3:] for row in expected["messages"]]
    for p in together:
        got = await _rows(h, p)
        got["messages"] = [row[:2] + row[3:] for row in got["messages"]]
        for table in expected:
            assert got[table] == expected[table], (p.first_name, table)
    assert len(spy.taken) == len(script) * len(together)
    # every reply was sent at once, in the order the steps built them
    for p in together:
        assert h.twilio.sent_to(p.phone) == h.twilio.sent_to(orm.phone)


async def _answers(h: Harness, *patients: Patient) -> list[list[tuple[str, Any]]]:
    async with h.db.read() as s:
        return [
            [
                tuple(r)
                for r in (
                    await s.execute(
                        select(Answer.question_key, Answer.value)
                        .join(Checkin, Checkin.id == Answer.checkin_id)
                        .where(Checkin.patient_id == p.id)
                        .order_by(Answer.id)
                    )
                ).all()
            ]
            for p in patients
        ]


@pytest.mark.postgres
async def test_a_conversation_moved_on_meanwhile_is_written_again_after_its_group(
    hp: Harness, spy: Spy, groups: GroupSpy
) -> None:
    """Another process moved one conversation on since this one remembered it: the group
    writes nothing for that reply (its state check fails), the others are written, and
    that one is read and written again."""
    h = hp
    a, b, c = [await h.patient() for _ in range(3)]
    for p in (a, b, c):
        await h.start(p, "phq9")
        await h.sms(p.phone, "1")  # this process remembers each state after q1
    other = Database(h.db.url)
    try:
        moved = await direct_reply.try_reply(
            other, h.settings, sid=new_sid(), phone=c.phone, body="2", now=h.clock.now()
        )
        assert moved is not None and not moved.duplicate  # q2 for c, by another process
    finally:
        await other.dispose()
    groups.sizes.clear()
    await asyncio.gather(*(h.sms(p.phone, "3") for p in (a, b, c)))
    assert max(groups.sizes) > 1, groups.sizes
    assert await _answers(h, a, b, c) == [
        [("q1", 1), ("q2", 3)],
        [("q1", 1), ("q2", 3)],
        [("q1", 1), ("q2", 2), ("q3", 3)],
    ]
    # each got the next question at once (the other process's own reply was never sent)
    assert len(h.twilio.sent_to(c.phone)) == len(h.twilio.sent_to(a.phone))


@pytest.mark.postgres
async def test_a_redelivery_in_a_group_changes_nothing_and_the_rest_are_written(
    hp: Harness, spy: Spy, groups: GroupSpy
) -> None:
    """A re-delivered MessageSid fails the group's statement whole (nothing is written):
    each reply is then written alone, and the re-delivery changes nothing."""
    h = hp
    first, a, b, c = [await h.patient() for _ in range(4)]
    for p in (first, a, b, c):
        await h.start(p, "phq9")
    sid_b = new_sid()
    await h.sms(b.phone, "1", sid=sid_b)
    sent_b = len(h.twilio.sent_to(b.phone))
    groups.sizes.clear()
    groups.sids.clear()
    await asyncio.gather(
        h.sms(first.phone, "0"),  # leads the first group, which waits a moment
        h.sms(a.phone, "3"),
        h.sms(b.phone, "1", sid=sid_b),
        h.sms(c.phone, "2"),
    )
    assert any(sid_b in g and len(g) > 1 for g in groups.sids), groups.sids
    assert await _answers(h, a, b, c, first) == [
        [("q1", 3)],
        [("q1", 1)],
        [("q1", 2)],
        [("q1", 0)],
    ]
    assert len(spy.taken) == 5 and not spy.handed_over  # all on the direct path
    assert len(h.twilio.sent_to(b.phone)) == sent_b
    async with h.db.read() as s:
        assert (
            await s.scalar(
                select(func.count()).select_from(Message).where(Message.provider_sid == sid_b)
            )
            == 1
        )


@pytest.mark.postgres
async def test_a_reply_failing_alone_after_its_group_failed_leaves_the_others_written(
    hp: Harness, spy: Spy, groups: GroupSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the group's statement fails and the replies are written one at a time, an
    error of one reply is that reply's alone: it takes the ORM path, the others are
    written on the direct path."""
    h = hp
    first, a, b, c = [await h.patient() for _ in range(4)]
    for p in (first, a, b, c):
        await h.start(p, "phq9")
    rows_of = direct_reply._pg_rows

    def no_group(writes: Any) -> str:  # the group's statement fails (not JSON), one alone does not
        return "not json" if len(writes) > 1 else rows_of(writes)

    monkeypatch.setattr(direct_reply, "_pg_rows", no_group)
    write_one = direct_reply._pg_write_one

    async def failing_for_b(conn: Any, w: Any) -> Any:
        if w.m.phone == b.phone:
            raise asyncpg.exceptions.DataError("this reply's own failure")
        return await write_one(conn, w)

    monkeypatch.setattr(direct_reply, "_pg_write_one", failing_for_b)
    answers = await asyncio.gather(
        h.sms(first.phone, "0"),  # leads the first group, which waits a moment
        h.sms(a.phone, "1"),
        h.sms(b.phone, "2"),
        h.sms(c.phone, "3"),
    )
    assert [r.status for r in answers] == [200] * 4
    assert any((len(g) > 1 and b.phone in str(g)) or len(g) > 1 for g in groups.sids)
    assert sorted(spy.taken) == ["0", "1", "3"] and spy.handed_over == ["2"]
    assert await _answers(h, first, a, b, c) == [[("q1", 0)], [("q1", 1)], [("q1", 2)], [("q1", 3)]]
