"""The Twilio transport: the official library over its async HTTP client.

The client's own retries stay off: it re-POSTs on 5xx, which can text a
patient twice. Its timeout is not honoured either, so every send is wrapped
in ``asyncio.timeout``; a timeout is treated as transient and the outbox
retries later (at worst one duplicate, never a lost message).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bot.logs import mask_phone
from bot.sms.transport import (
    PERMANENT_CODES,
    PermanentSendError,
    SendResult,
    TransientSendError,
)

log = logging.getLogger(__name__)
TWILIO_API = "https://api.twilio.com"


class _RebasedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """Sends what the library would send to api.twilio.com to another base (tests only)."""

    def __init__(self, base: str | None) -> None:
        super().__init__(max_retries=None)
        self._base = base.rstrip("/") if base else None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library's signature; ignored
        allow_redirects: bool = False,
    ) -> Response:
        if self._base and url.startswith(TWILIO_API):
            url = self._base + url[len(TWILIO_API) :]
        headers = dict(headers or {})
        if auth is not None:
            # aiohttp deprecates BasicAuth, which the library would build; send the header.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=None,
            allow_redirects=allow_redirects,
        )


class TwilioTransport:
    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        messaging_service_sid: str | None,
        from_number: str | None,
        status_callback: str | None,
        timeout_s: float,
        api_base: str | None = None,
    ) -> None:
        if not (messaging_service_sid or from_number):
            raise ValueError("a messaging service SID or a from number is required")
        self._http = _RebasedHttpClient(api_base)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._service = messaging_service_sid
        self._from = from_number
        self._callback = status_callback
        self._timeout = timeout_s

    async def send(self, *, to: str, body: str) -> SendResult:
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if self._service:
            kwargs["messaging_service_sid"] = self._service
        else:
            kwargs["from_"] = self._from
        if self._callback:
            kwargs["status_callback"] = self._callback
        try:
            async with asyncio.timeout(self._timeout):
                message = await self._client.messages.create_async(**kwargs)
        except TimeoutError as exc:
            raise TransientSendError(f"no answer from Twilio within {self._timeout}s") from exc
        except TwilioRestException as exc:
            code = int(exc.code) if exc.code is not None else None
            if exc.status >= 500 or exc.status == 429:
                raise TransientSendError(
                    f"Twilio answered {exc.status}", code=code, status=exc.status
                ) from exc
            if code in PERMANENT_CODES or 400 <= exc.status < 500:
                raise PermanentSendError(
                    f"Twilio refused the message (HTTP {exc.status}, error {code})",
                    code=code,
                    status=exc.status,
                ) from exc
            raise TransientSendError(f"Twilio error {exc.status}", code=code) from exc
        except OSError as exc:
            raise TransientSendError(f"connection to Twilio failed: {type(exc).__name__}") from exc
        except Exception as exc:  # aiohttp client errors and malformed answers
            raise TransientSendError(f"sending failed: {type(exc).__name__}") from exc
        log.info("twilio accepted SMS to %s sid=%s", mask_phone(to), message.sid)
        return SendResult(sid=str(message.sid), status=str(message.status or "queued"))

    async def close(self) -> None:
        await self._http.close()
