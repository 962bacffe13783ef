"""A request ID per request, carried into logs (and the tasks a request starts) via contextvars."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from bot.logs import request_id
from bot.web.api.errors import Handler

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(HEADER, "")
    rid = incoming if _SANE.match(incoming) else uuid.uuid4().hex[:16]
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
