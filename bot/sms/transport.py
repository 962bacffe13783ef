"""The small interface every SMS transport implements, and its failure kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Twilio error codes that mean "do not try this message again".
OPTED_OUT_CODE = 21610
PERMANENT_CODES = frozenset(
    {
        21211,  # invalid 'To' number
        21408,  # region not enabled
        21610,  # recipient unsubscribed (STOP)
        21612,  # cannot route to this number
        21614,  # not a mobile number
        30004,  # message blocked
        30005,  # unknown destination handset
        30006,  # landline or unreachable carrier
        30007,  # carrier filtering
    }
)
# Delivery errors worth another attempt later.
TRANSIENT_DELIVERY_CODES = frozenset({30001, 30003, 30008, 30009})


@dataclass(frozen=True, slots=True)
class SendResult:
    sid: str
    status: str


class SendError(Exception):
    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = status


class TransientSendError(SendError):
    """Try again later: 5xx, 429, timeouts, connection errors."""


class PermanentSendError(SendError):
    """Never retry: the request itself is wrong or the recipient cannot be texted."""


class Transport(Protocol):
    name: str

    async def send(self, *, to: str, body: str) -> SendResult: ...

    async def close(self) -> None: ...
