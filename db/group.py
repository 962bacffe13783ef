"""Leader and followers: work that is ready at the same moment shares one database call.

The first caller leads: it yields once so that others ready in the same turn of the
event loop can join, then runs the whole group on its own connection (the followers
wait holding theirs, so the leader never waits for the pool). Callers that arrive while
a group runs queue for the next one, and the first of them leads it. One group runs at
a time per instance: while it is at the database the next one fills up, so the size of
a group follows the load and a lone caller pays only the one yield.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupFailed(Exception):
    """The leader's call failed (or the leader was cancelled): nothing of the group is
    known to be written, or all of it is; the caller falls back as for any failure."""


class _Waiter(Generic[T, R]):
    __slots__ = ("future", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.future: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()


class Group(Generic[T, R]):
    """One queue of callers; results must never be None (None tells a caller to lead)."""

    def __init__(self, limit: int = 32) -> None:
        self._limit = limit
        self._queue: list[_Waiter[T, R]] = []
        self._busy = False

    async def run(self, item: T, call: Callable[[Sequence[T]], Awaitable[Sequence[R]]]) -> R:
        """``call`` gets the group's items, this one first, and returns their results in
        the same order; it runs on the leader's behalf, so it must use the leader's
        connection (bound into ``call`` by each caller; only the leader's is used)."""
        if self._busy:
            me: _Waiter[T, R] = _Waiter(item)
            self._queue.append(me)
            try:
                result = await me.future
            except asyncio.CancelledError:
                if _chosen_to_lead(me.future):
                    self._hand_over()  # cancelled just as its turn came: pass it on
                raise
            if result is not None:
                return result
            # None: this caller leads the next group
        else:
            self._busy = True
        followers: list[_Waiter[T, R]] = []
        try:
            await asyncio.sleep(0)  # let callers ready in this turn join
            followers = [w for w in self._queue[: self._limit - 1] if not w.future.done()]
            del self._queue[: self._limit - 1]
            results = await call([item, *(w.item for w in followers)])
            if len(results) != 1 + len(followers):
                raise RuntimeError(f"{len(results)} results for {1 + len(followers)} items")
        except BaseException as exc:
            for w in followers:
                if not w.future.done():
                    w.future.set_exception(GroupFailed(type(exc).__name__))
            raise
        finally:
            self._hand_over()
        for w, result in zip(followers, results[1:], strict=True):
            if not w.future.done():
                w.future.set_result(result)
        return results[0]

    def _hand_over(self) -> None:
        while self._queue:
            nxt = self._queue.pop(0)
            if not nxt.future.done():
                nxt.future.set_result(None)  # lead the next group
                return
        self._busy = False


def _chosen_to_lead(future: asyncio.Future[R | None]) -> bool:
    return (
        future.done()
        and not future.cancelled()
        and future.exception() is None
        and future.result() is None
    )
