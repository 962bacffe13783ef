"""The console transport: logs outbound messages (masked, no body) and marks them sent."""

from __future__ import annotations

import itertools
import logging
import secrets
import sys
from typing import TextIO

from bot.logs import mask_phone
from bot.sms.transport import SendResult

log = logging.getLogger(__name__)
# unique across processes and restarts (provider SIDs are a unique column): a random
# prefix per process and a counter
_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count(1)


class ConsoleTransport:
    """For the demo and development. ``echo`` prints bodies to a terminal the operator owns."""

    name = "console"

    def __init__(self, *, echo: TextIO | None = None) -> None:
        self._echo = echo

    async def send(self, *, to: str, body: str) -> SendResult:
        sid = f"CM{_PREFIX}{next(_COUNTER):016x}"
        log.info("console SMS to %s (%d chars) sid=%s", mask_phone(to), len(body), sid)
        if self._echo is not None:
            print(f"[SMS to {mask_phone(to)}] {body}", file=self._echo, flush=True)
        return SendResult(sid=sid, status="sent")

    async def close(self) -> None:
        return None


def stdout_echo() -> TextIO:
    return sys.stdout
