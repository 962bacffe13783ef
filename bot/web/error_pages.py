"""Errors on pages in the site layout: a short explanation, the status, and a way back.

403, 404 and 405 (and 400) raised by a page handler or the router, and any unexpected
exception (500, logged with its traceback, which is never shown), become ``error.html``
for page paths. The API, Twilio's webhooks, static files, ``/healthz`` and ``/metrics``
keep their own errors. A handler's own text is kept as the explanation when it is a plain
sentence ("No such patient."), not aiohttp's "404: Not Found"; headers such as ``Allow``
on a 405 are kept.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from bot.logs import request_id
from bot.web.api.errors import Handler
from bot.web.pages.common import PAGE_PREFIXES_SKIPPED, render

log = logging.getLogger(__name__)

TEMPLATE = "error.html"
SHOWN = frozenset({400, 403, 404, 405})
TITLES = {
    400: "This request could not be used",
    403: "Not allowed",
    404: "Page not found",
    405: "Not available this way",
    500: "Something went wrong",
}
EXPLANATIONS = {
    400: "The page sent something this site could not use. Go back and try again.",
    403: "Your account is not allowed to open this page.",
    404: "There is no page at this address. The link may be mistyped or out of date.",
    405: "This address does not accept that kind of request.",
    500: (
        "Something went wrong on our side and it has been logged. Try again in a moment; "
        "if it keeps happening, tell an administrator and give them the reference below."
    ),
}
# headers of the exception that describe its old text body, not the page we render
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})
# one plain sentence (or two): a capital first, a full stop last, no markup or newlines
_SENTENCE = re.compile(r"[A-Z][^\n<>]{1,298}[.!?]")


def explanation(exc: web.HTTPException) -> str:
    """The handler's text if it is a plain sentence, else the status's own explanation."""
    text = (exc.text or "").strip()
    if _SENTENCE.fullmatch(text) and not text.startswith(f"{exc.status}:"):
        return text
    return EXPLANATIONS.get(exc.status, EXPLANATIONS[404])


def is_page(path: str) -> bool:
    return not path.startswith(PAGE_PREFIXES_SKIPPED)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_page(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in SHOWN:
            raise
        response = _page(request, exc.status, explanation(exc))
        for name, value in exc.headers.items():
            if name.lower() not in _BODY_HEADERS:
                response.headers[name] = value
        return response
    except ConnectionResetError:  # the client went away: nothing to show anyone
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _page(request, 500, EXPLANATIONS[500], reference=request_id.get())


def _page(request: web.Request, status: int, text: str, *, reference: str = "") -> web.Response:
    context = {
        "status": status,
        "title": TITLES[status],
        "explanation": text,
        "reference": reference if reference != "-" else "",
    }
    try:
        return render(request, TEMPLATE, context, status=status)
    except Exception:  # the layout itself failed: still no traceback, still the status
        log.exception("could not render the %s page for %s", status, request.path)
        return web.Response(status=status, text=f"{TITLES[status]}. {text}")
