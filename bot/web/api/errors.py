"""API errors: ``{"error": {"code", "message", "details"}}`` with a fitting status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "details": details}}, status=status
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message}])


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for ``/api/``; never a stack trace in a response."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="aftercare"'
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        response = error_response(exc.status, code, exc.reason)
        if "Allow" in exc.headers:
            # a 405 names the methods the resource has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")


async def json_body(request: web.Request, *, max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The request's JSON object, or a 4xx saying what is wrong with it."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "too_large", f"request body over {max_bytes} bytes")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "too_large", f"request body over {max_bytes} bytes")
    if not raw.strip():
        # every JSON operation documents its body as required
        raise ApiError(
            422,
            "invalid",
            "body: a JSON object is required",
            [{"field": "body", "message": "a JSON object is required"}],
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "request body must be a JSON object")
    return data
