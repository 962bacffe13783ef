"""Fire-and-forget work after a response (the outbox fast path), tracked so shutdown waits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from bot.appkeys import BACKGROUND, TaskSet

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 10.0


def spawn(app: web.Application, coro: Coroutine[Any, Any, None]) -> None:
    tasks = app[BACKGROUND].tasks
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("background task failed: %r", t.exception())

    task.add_done_callback(done)


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    app[BACKGROUND] = TaskSet()
    yield
    pending = list(app[BACKGROUND].tasks)
    if pending:
        _done, still = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
        for task in still:
            task.cancel()
        # cancelled sends keep their lease and are retried by a worker later
        await asyncio.gather(*still, return_exceptions=True)
