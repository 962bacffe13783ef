"""``GET /healthz``: 200 when the database answers, 503 otherwise."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot.appkeys import DATABASE

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await request.app[DATABASE].ping()
    except Exception as exc:
        log.warning("health check failed: %s", type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    return web.json_response({"status": "ok", "database": "up"})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
