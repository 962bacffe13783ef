"""Sending texts a request has just committed, without waiting for the worker's next tick."""

from __future__ import annotations

from aiohttp import web

from bot import background
from bot.appkeys import CLOCK, DATABASE, TRANSPORT
from bot.services import outbox


def send_now(app: web.Application, ids: list[int]) -> None:
    """Send these committed outbound rows in the background; a failure leaves them to the
    outbox's retries, as any send."""

    async def send() -> None:
        await outbox.send(app[DATABASE], app[TRANSPORT], app[CLOCK], ids=ids)

    background.spawn(app, send())
