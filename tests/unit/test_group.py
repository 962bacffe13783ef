"""``db.group``: leader and followers sharing one call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from db.group import Group, GroupFailed


class Calls:
    """A database call stand-in: records each group, answers each item doubled."""

    def __init__(self, delay: float = 0.01, fail_on: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.groups.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail_on in items:
            raise ConnectionResetError("lost")
        return [i * 2 for i in items]


async def test_a_lone_caller_runs_its_own_group() -> None:
    calls = Calls()
    assert await Group[int, int]().run(7, calls) == 14
    assert calls.groups == [[7]]


async def test_callers_that_arrive_while_a_group_runs_share_the_next() -> None:
    group, calls = Group[int, int](), Calls()
    results = await asyncio.gather(*(group.run(i, calls) for i in range(1, 6)))
    assert results == [2, 4, 6, 8, 10]
    # the first leads alone or with those ready in its turn; the rest wait and go together
    assert sorted(i for g in calls.groups for i in g) == [1, 2, 3, 4, 5]
    assert len(calls.groups) < 5 and calls.groups[0][0] == 1


async def test_groups_are_bounded_and_run_one_at_a_time() -> None:
    group, calls = Group[int, int](limit=3), Calls()
    running = 0
    most = 0

    async def call(items: Sequence[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return await calls(items)
        finally:
            running -= 1

    results = await asyncio.gather(*(group.run(i, call) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert max(len(g) for g in calls.groups) <= 3 and most == 1


async def test_a_failed_call_fails_its_group_and_the_next_group_still_runs() -> None:
    group, calls = Group[int, int](), Calls(fail_on=1)

    async def first() -> int:
        return await group.run(1, calls)

    leader = asyncio.create_task(first())
    await asyncio.sleep(0)  # the leader is at its call
    await asyncio.sleep(0)
    followers = [asyncio.create_task(group.run(i, calls)) for i in (2, 3)]
    outcomes = await asyncio.gather(leader, *followers, return_exceptions=True)
    assert isinstance(outcomes[0], ConnectionResetError)
    # 2 and 3 either joined the failed group (GroupFailed) or ran in the next one
    for outcome, item in zip(outcomes[1:], (2, 3), strict=True):
        assert outcome == item * 2 or isinstance(outcome, GroupFailed)
    assert await group.run(9, calls) == 18  # the group is free again


async def test_a_cancelled_caller_is_left_out_of_the_group() -> None:
    group, calls = Group[int, int](), Calls(delay=0.02)
    leader = asyncio.create_task(group.run(1, calls))
    await asyncio.sleep(0.005)  # the leader's group is at the database
    gone = asyncio.create_task(group.run(2, calls))
    stays = asyncio.create_task(group.run(3, calls))
    await asyncio.sleep(0)
    gone.cancel()
    assert await leader == 2 and await stays == 6
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert [2 in g for g in calls.groups] == [False, False]


async def test_a_caller_cancelled_just_as_its_turn_comes_passes_the_lead_on() -> None:
    """Chosen to lead the next group, then cancelled before it could: the caller after it
    must lead instead, or the group would wait forever."""
    group, calls = Group[int, int](), Calls()
    tasks: dict[int, asyncio.Task[int]] = {}
    hand_over = group._hand_over

    def cancel_the_chosen() -> None:
        hand_over()
        if 2 in tasks and not tasks[2].done():
            tasks[2].cancel()  # its future already says "lead"; it has not resumed yet

    group._hand_over = cancel_the_chosen  # type: ignore[method-assign]
    tasks[1] = asyncio.create_task(group.run(1, calls))
    await asyncio.sleep(0.002)
    tasks[2] = asyncio.create_task(group.run(2, calls))
    await asyncio.sleep(0)
    tasks[3] = asyncio.create_task(group.run(3, calls))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(tasks[3], 1) == 6
    assert await tasks[1] == 2
    assert tasks[2].cancelled()
