"""Logging without PHI: one JSON object per line, request IDs, masked phone numbers.

Message bodies are never logged by our code; phone numbers are masked where
they are logged and, as a last line of defence, anything phone-shaped in a
formatted record (message or traceback) is masked by the formatter.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_PHONE = re.compile(r"\+?\d[\d\s().-]{8,}\d")
# dates and times are not phone numbers: "2026-12-03 14:50:07" must stay readable
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}(?::\d{2}){0,2})?$|\d{2}:\d{2}")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def mask_phone(phone: str | None) -> str:
    """``+15551234567`` → ``+1******4567``: enough to tell numbers apart, not to dial."""
    if not phone:
        return "-"
    digits = phone.strip()
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_head = 2 if digits.startswith("+") else 0
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 4) + digits[-4:]


def _mask_match(match: re.Match[str]) -> str:
    found = match.group(0)
    if _DATE_TIME.match(found) or _DATE_TIME.match(match.string, match.end()):
        return found
    return mask_phone(re.sub(r"[^\d+]", "", found))


def mask_text(text: str) -> str:
    return _PHONE.sub(_mask_match, text)


class PhoneMaskingFilter(logging.Filter):
    """Masks anything phone-shaped in the message; also stamps the request ID."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg = masked
            record.args = None
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
            "request_id": getattr(record, "request_id", request_id.get()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "request_id" and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, int | float | bool | None) else mask_text(str(value))
                )
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Masks the message and traceback, never the timestamp the line starts with."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        record.message = mask_text(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - stdlib name
        return mask_text(super().formatException(ei))


def handler(stream: object = None, *, fmt: str = "json") -> logging.Handler:
    h = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if fmt == "json":
        h.setFormatter(JsonFormatter())
    else:
        h.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    h.addFilter(PhoneMaskingFilter())
    return h


def configure(level: str = "INFO", fmt: str = "json") -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler(fmt=fmt)]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # the Twilio client logs request headers and URLs at INFO; ours say what matters
    logging.getLogger("twilio").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
