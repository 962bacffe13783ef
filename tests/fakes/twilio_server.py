"""A local fake of Twilio's Messages API that the real ``twilio`` client is pointed at.

It records every request and answers as told: 201 with a message resource, a
4xx with a Twilio error code, a 5xx, or no answer at all (hang).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Recorded:
    account_sid: str
    form: dict[str, str]
    authorization: str | None

    @property
    def to(self) -> str:
        return self.form.get("To", "")

    @property
    def body(self) -> str:
        return self.form.get("Body", "")


@dataclass
class Behaviour:
    """What to answer next: a queue of one-off answers, then the default."""

    queue: list[tuple[str, int, int | None]] = field(default_factory=list)
    default: tuple[str, int, int | None] = ("ok", 201, None)


class FakeTwilio:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.behaviour = Behaviour()
        self._sids = itertools.count(1)
        self.app = web.Application()
        self.app.router.add_post(
            "/2010-04-01/Accounts/{account}/Messages.json", self._create_message
        )
        self.server: TestServer | None = None
        self.hang_event = asyncio.Event()

    # -- control ---------------------------------------------------------------------------
    def answer_next(self, kind: str, status: int = 201, code: int | None = None) -> None:
        """kind: ok | error | hang."""
        self.behaviour.queue.append((kind, status, code))

    def answer_always(self, kind: str, status: int = 201, code: int | None = None) -> None:
        self.behaviour.default = (kind, status, code)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> None:
        self.server = TestServer(self.app)
        await self.server.start_server()

    async def close(self) -> None:
        self.hang_event.set()
        if self.server is not None:
            await self.server.close()

    def sent_to(self, phone: str) -> list[str]:
        return [r.body for r in self.requests if r.to == phone]

    # -- the API ---------------------------------------------------------------------------
    async def _create_message(self, request: web.Request) -> web.Response:
        form = dict(parse_qsl(await request.text(), keep_blank_values=True))
        account = request.match_info["account"]
        self.requests.append(Recorded(account, form, request.headers.get("Authorization")))
        kind, status, code = (
            self.behaviour.queue.pop(0) if self.behaviour.queue else self.behaviour.default
        )
        if kind == "hang":
            await self.hang_event.wait()
            return web.json_response({}, status=504)
        if kind == "error":
            return web.json_response(
                {
                    "code": code,
                    "message": f"fake error {code}",
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status,
                },
                status=status,
            )
        sid = "SM" + uuid.uuid4().hex
        return web.json_response(
            {
                "sid": sid,
                "account_sid": account,
                "to": form.get("To"),
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
            },
            status=201,
        )
