"""``GET /metrics`` in Prometheus text format, protected by a token or loopback-only."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.appkeys import CLOCK, DATABASE, METRICS, SETTINGS


def _allowed(request: web.Request) -> bool:
    token = request.app[SETTINGS].metrics_token
    if token:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header, f"Bearer {token}")
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def metrics_view(request: web.Request) -> web.Response:
    """``GET /metrics``: with METRICS_TOKEN set, needs that bearer token; else loopback only."""
    if not _allowed(request):
        return web.Response(status=403, text="metrics need METRICS_TOKEN or a loopback client\n")
    metrics = request.app[METRICS]
    await metrics.refresh(request.app[DATABASE], request.app[CLOCK].now())
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_view)
