"""Security headers on every response; ``no-store`` on anything that may carry PHI."""

from __future__ import annotations

from aiohttp import web

from bot.appkeys import SETTINGS
from bot.web.api.errors import Handler

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
PUBLIC_PATHS = ("/static/", "/healthz")
SERVER = "aftercare"  # no versions: they only help an attacker pick an exploit
HSTS = "max-age=31536000; includeSubDomains"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _apply(request, exc)
        raise
    _apply(request, response)
    return response


def _apply(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if not request.path.startswith(PUBLIC_PATHS):
        h["Cache-Control"] = "no-store"
        h.setdefault("Pragma", "no-cache")


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, also those no middleware sees (static files, early errors)."""
    response.headers["Server"] = SERVER
    if request.app[SETTINGS].public_base_url.startswith("https://"):
        # browsers keep to https for a year once they have seen the site over https
        response.headers["Strict-Transport-Security"] = HSTS


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_on_prepare)
