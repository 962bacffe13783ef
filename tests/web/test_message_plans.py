"""The plans of the lookups on messages that partial indexes serve.

Among many sent messages, each must reach its rows through its index, not by
scanning the table. SQLite uses a partial index only when the query names the
index's predicate literally, so a bound parameter in the wrong place turns an
index lookup into a scan of every message ever sent: these tests read the plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Select, insert, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from bot.services import outbox
from db.enums import Direction, MessageStatus
from db.models import Message, of_sender
from tests.web.harness import Harness, harness

UNKNOWN = "+12025550777"


class _Explain(Executable, ClauseElement):
    """``EXPLAIN <statement>`` with the statement's binds processed as when it runs."""

    inherit_cache = False

    def __init__(self, statement: Select[Any], sqlite: bool) -> None:
        self.statement = statement
        self.sqlite = sqlite


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: object) -> str:
    prefix = "EXPLAIN QUERY PLAN " if element.sqlite else "EXPLAIN "
    return prefix + compiler.process(element.statement, **kw)


@dataclass(frozen=True)
class Seeded:
    h: Harness
    patient_id: int


@pytest.fixture
async def seeded(db_url: str):  # type: ignore[no-untyped-def]
    """50 patients with 5,000 delivered messages, three unsent, and an unknown sender's texts."""
    async with harness(db_url) as hh:
        clinic = [await hh.patient(f"P{i}") for i in range(50)]
        p = clinic[0]
        now = hh.clock.now()
        sent = [
            outbox.message_row(phone=q.phone, body="x", purpose="info", now=now, patient_id=q.id)
            | {"status": MessageStatus.DELIVERED}
            for _ in range(100)
            for q in clinic
        ]
        unknown = [
            outbox.message_row(phone=UNKNOWN, body="u", purpose="unknown", now=now)
            | {"status": MessageStatus.DELIVERED}
            for _ in range(3)
        ]
        async with hh.db.write() as s:
            await s.execute(insert(Message), sent + unknown)
            for _ in range(3):
                outbox.enqueue(
                    session=s, phone=p.phone, body="y", purpose="info", now=now, patient_id=p.id
                )
        async with hh.db.write() as s:
            await s.execute(text("ANALYZE" if hh.db.is_sqlite else "ANALYZE messages"))
        yield Seeded(hh, p.id)


async def _plan(h: Harness, statement: Select[Any]) -> str:
    async with h.db.read() as s:
        rows = (await s.execute(_Explain(statement, h.db.is_sqlite))).all()
    return "\n".join(str(r[-1]) for r in rows)


async def test_the_claim_finds_unsent_rows_through_the_outbox_index(seeded: Seeded) -> None:
    """The claim and the worker's backlog count share the predicate; since migration 0006
    no other index on messages knows the status."""
    h = seeded.h
    now = h.clock.now()
    for ids in (None, [1, 2, 3]):
        plan = await _plan(h, outbox.claim_query(ids, now, 200))
        assert "ix_messages_outbox" in plan, plan


async def test_an_unknown_senders_texts_are_found_through_the_unlinked_index(
    seeded: Seeded,
) -> None:
    """Migration 0008 indexes the number only where there is no patient."""
    h = seeded.h
    since = h.clock.now() - timedelta(hours=1)
    query = (
        select(Message.id)
        .where(
            of_sender(None, UNKNOWN),
            Message.direction == Direction.OUT,
            Message.created_at >= since,
        )
        .limit(1)
    )
    plan = await _plan(h, query)
    assert "ix_messages_phone_unlinked" in plan, plan
    async with h.db.read() as s:
        assert await s.scalar(query) is not None


async def test_a_patients_texts_are_found_through_the_patient(seeded: Seeded) -> None:
    h = seeded.h
    query = (
        select(Message.id)
        .where(of_sender(seeded.patient_id, "+10000000000"), Message.created_at <= h.clock.now())
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(10)
    )
    plan = await _plan(h, query)
    assert "ix_messages_patient_id_created_at" in plan, plan
