"""``GET /metrics`` in Prometheus text format, protected by a token or loopback-only."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.appkeys import CLOCK, DATABASE, METRICS, SETTINGS
from bot.web.client_address import is_trusted_proxy

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def _bearer(header: str) -> bytes | None:
    """The token of a well-formed ``Bearer`` header, else None."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not token.isascii() or not token.isprintable():
        return None
    return token.encode("ascii")


def _refusal(request: web.Request) -> web.Response | None:
    """Why this scrape may not read, or None when it may.

    Without ``METRICS_TOKEN`` only a loopback peer may read, and never through a trusted
    proxy: behind a proxy on the same host every request comes from loopback."""
    token = request.app[SETTINGS].metrics_token
    header = request.headers.get("Authorization")
    offered = None if header is None else _bearer(header)
    if header is not None and offered is None:
        return web.Response(status=401, text="malformed Authorization header\n", headers=_CHALLENGE)
    if token:
        if offered is None or not hmac.compare_digest(offered, token.encode("utf-8")):
            return web.Response(
                status=401, text="metrics need the METRICS_TOKEN bearer\n", headers=_CHALLENGE
            )
        return None
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback or is_trusted_proxy(request):
        return web.Response(status=403, text="metrics need METRICS_TOKEN or a loopback client\n")
    return None


async def metrics_view(request: web.Request) -> web.Response:
    """``GET /metrics``: with METRICS_TOKEN set, needs that bearer token; else loopback only."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    metrics = request.app[METRICS]
    await metrics.refresh(request.app[DATABASE], request.app[CLOCK].now())
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_view)
