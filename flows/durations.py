"""Durations in flow and protocol files: ``30m``, ``4h``, ``1d``, ``2w``, ``1h30m``.

Admins write delays as short strings; a fixed grammar (weeks, days, hours,
minutes, in that order, each at most once) keeps them unambiguous.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

DURATION_PATTERN = r"^(?=\d)(?:(\d{1,4})w)?(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?$"
_DURATION = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> timedelta:
    """Parse ``text``; raise ``ValueError`` with a fix-it message if it is not a duration."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if m is None or not any(m.groups()):
        raise ValueError(
            f"invalid duration {text!r}: write a number and a unit, e.g. 30m, 4h, 1d, 2w or 1h30m"
        )
    weeks, days, hours, minutes = (int(g) if g else 0 for g in m.groups())
    value = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)
    if value <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return value


@lru_cache(maxsize=256)
def duration_seconds(text: str) -> int:
    """Whole seconds of a (valid) duration, memoized: flows name the same few many times."""
    return int(parse_duration(text).total_seconds())


def format_duration(value: timedelta) -> str:
    """The canonical string for ``value`` (whole minutes), the inverse of :func:`parse_duration`."""
    minutes = int(value.total_seconds() // 60)
    out = []
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60), ("m", 1)):
        n, minutes = divmod(minutes, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0m"
