"""Time comes from a clock object so tests can drive it; the pure core never reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now


def utc_from_iso(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset (a cursor in a link), as UTC; ``ValueError`` if it
    is not one, also when it has no offset or falls outside the calendar once moved to UTC
    (``0001-01-01T00:00+05:00``), so a forged link is a clear error, not a crash."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError("the time needs its UTC offset")
    try:
        return at.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range") from exc
