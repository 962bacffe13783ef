"""Logging without PHI: phone numbers are masked and message bodies never logged."""

from __future__ import annotations

import logging
import re
import sys

_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


def mask_phone(phone: str | None) -> str:
    """``+15551234567`` → ``+1******4567``: enough to tell numbers apart, not to dial."""
    if not phone:
        return "-"
    digits = phone.strip()
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_head = 2 if digits.startswith("+") else 0
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 4) + digits[-4:]


class PhoneMaskingFilter(logging.Filter):
    """Last line of defence: masks anything phone-shaped that reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _PHONE.sub(lambda m: mask_phone(re.sub(r"[^\d+]", "", m.group(0))), message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(PhoneMaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("twilio").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
