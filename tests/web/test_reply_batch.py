"""Replies written together: each answered once, in groups under load; and any doubt
sends the whole group back to it having written nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.services import reply_batch, steps
from db.enums import Direction
from db.models import Answer, Message
from tests.web.harness import Harness, harness, new_sid


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _answers(h: Harness) -> int:
    async with h.db.read() as s:
        return int(await s.scalar(select(func.count(Answer.id))) or 0)


async def _questions_to(h: Harness, phone: str) -> int:
    async with h.db.read() as s:
        return int(
            await s.scalar(
                select(func.count(Message.id)).where(
                    Message.phone == phone,
                    Message.direction == Direction.OUT,
                    Message.purpose == "question",
                )
            )
            or 0
        )


async def test_concurrent_replies_share_groups_and_each_is_answered_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    original = reply_batch.write_group

    async def spy(db: Any, settings: Any, items: Any) -> Any:
        sizes.append(len(items))
        return await original(db, settings, items)

    monkeypatch.setattr(reply_batch, "write_group", spy)
    patients = [await h.patient() for _ in range(12)]
    for p in patients:
        await h.start(p, "phq9")
    before = [await _questions_to(h, p.phone) for p in patients]
    await asyncio.gather(*(h.sms(p.phone, "2") for p in patients))
    assert await _answers(h) == 12
    assert max(sizes) > 1, sizes
    after = [await _questions_to(h, p.phone) for p in patients]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1] * 12
    # a re-delivery of an answered text changes nothing
    sid = new_sid()
    await h.sms(patients[0].phone, "1", sid=sid)
    await h.sms(patients[0].phone, "1", sid=sid)
    assert await _answers(h) == 13


async def test_a_group_with_a_stale_step_is_written_one_at_a_time(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = steps.write_steps
    calls = {"group": 0}

    async def stale_in_groups(session: Any, writes: Any, now: Any) -> Any:
        written = await original(session, writes, now)
        if any(w.claim for w in writes) and calls["group"] == 0:
            calls["group"] += 1
            return [None, *written[1:]]  # as if another process moved one on
        return written

    monkeypatch.setattr(reply_batch, "write_steps", stale_in_groups)
    patients = [await h.patient() for _ in range(4)]
    for p in patients:
        await h.start(p, "phq9")
    await asyncio.gather(*(h.sms(p.phone, "3") for p in patients))
    assert calls["group"] == 1
    assert await _answers(h) == 4  # the group rolled back; each went alone, once
    async with h.db.read() as s:
        texts = await s.scalar(
            select(func.count(Message.id)).where(Message.direction == Direction.IN)
        )
    assert texts == 4
