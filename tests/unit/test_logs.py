"""Logs are JSON lines with request IDs, and carry no phone numbers or message bodies."""

from __future__ import annotations

import io
import json
import logging

from bot.logs import handler, mask_phone, mask_text, request_id
from tests.conftest import scan_for_phi


def _logger(stream: io.StringIO) -> logging.Logger:
    log = logging.getLogger(f"test.logs.{id(stream)}")
    log.handlers[:] = [handler(stream, fmt="json")]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


def test_mask_phone() -> None:
    assert mask_phone("+15551234567") == "+1******4567"
    assert mask_phone(None) == "-"
    assert mask_phone("123") == "***"


def test_one_json_object_per_line_with_request_id() -> None:
    stream = io.StringIO()
    log = _logger(stream)
    token = request_id.set("req-12345678")
    try:
        log.info("handled %s", "thing", extra={"count": 3})
    finally:
        request_id.reset(token)
    record = json.loads(stream.getvalue().strip())
    assert record["msg"] == "handled thing"
    assert record["request_id"] == "req-12345678"
    assert record["count"] == 3
    assert record["level"] == "INFO" and record["ts"].endswith("+00:00")


def test_phone_numbers_are_masked_even_in_tracebacks() -> None:
    stream = io.StringIO()
    log = _logger(stream)
    try:
        raise ValueError("bad number +12025550123")
    except ValueError:
        log.exception("failed for +12025550123")
    text = stream.getvalue()
    assert "+12025550123" not in text
    assert mask_text("+12025550123") in text


def test_the_suite_scanner_finds_what_it_must() -> None:
    assert scan_for_phi('{"msg": "from +12025550123"}')
    assert scan_for_phi('{"msg": "body: I want to die"}')
    assert not scan_for_phi('{"msg": "from +1*******0123"}')


def test_masking_never_touches_timestamps() -> None:
    stream = io.StringIO()
    log = logging.getLogger("test.logs.text")
    log.handlers[:] = [handler(stream, fmt="text")]
    log.propagate = False
    log.setLevel(logging.INFO)
    log.info("due 2026-12-03T14:00:00+00:00 at 07:24:08 for +12025550123")
    line = stream.getvalue()
    stamp = line.split(" INFO ")[0]
    assert "*" not in stamp and stamp[:4].isdigit()  # "2026-12-03 07:24:08,123"
    assert "2026-12-03T14:00:00+00:00" in line and "07:24:08" in line
    assert "+12025550123" not in line and "+1******0123" in line
    assert mask_text("call 555-123-4567 on 2026-12-03") == "call ******4567 on 2026-12-03"
