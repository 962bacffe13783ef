"""A request ID per request, carried into logs (and the tasks a request starts) via contextvars."""

from __future__ import annotations

import itertools
import re
import secrets

from aiohttp import web

from bot.logs import request_id
from bot.web.api.errors import Handler

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# unique, not secret: a random prefix per process and a counter (uuid4 read the kernel's
# random source on every request)
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFF:08x}"


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(HEADER, "")
    rid = incoming if _SANE.match(incoming) else new_request_id()
    token = request_id.set(rid)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[HEADER] = rid
            raise
        response.headers[HEADER] = rid
        return response
    finally:
        request_id.reset(token)
