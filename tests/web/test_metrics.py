"""``/metrics``: protected, and moving with traffic."""

from __future__ import annotations

import re

import pytest

from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url, METRICS_TOKEN="metrics-token-0123456789") as hh:
        yield hh


def _value(text: str, name: str, labels: str = "") -> float:
    pattern = (
        re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    )
    match = re.search(pattern, text)
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


async def _scrape(h: Harness) -> str:
    resp = await h.client.get(
        "/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return await resp.text()


async def test_metrics_need_the_token(h: Harness) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        resp = await h.client.get("/metrics", headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer métrica-token-0123456789",  # non-ASCII: was a 500
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "metrics-token-0123456789",
        "Bearer tab\there",
    ],
)
async def test_a_malformed_authorization_header_is_401(h: Harness, header: str) -> None:
    resp = await h.client.get("/metrics", headers={"Authorization": header})
    assert resp.status == 401


async def test_metrics_move_with_traffic(h: Harness) -> None:
    before = await _scrape(h)
    assert _value(before, "aftercare_checkins", 'status="active"') == 0
    p = await h.patient()
    await h.start(p, "phq9")
    await h.sms(p.phone, "1")
    await h.sms(p.phone, "I want to kill myself")
    await h.sms("+12025550999", "hello?")
    after = await _scrape(h)
    assert _value(after, "aftercare_inbound_messages_total", 'route="conversation"') == 1
    assert _value(after, "aftercare_inbound_messages_total", 'route="crisis"') == 1
    assert _value(after, "aftercare_inbound_messages_total", 'route="unknown"') == 1
    assert _value(after, "aftercare_webhook_seconds_count", 'endpoint="sms"') == 3
    assert _value(after, "aftercare_outbound_messages_total", 'result="accepted"') >= 3
    assert _value(after, "aftercare_open_escalations", 'severity="critical"') == 1
    assert _value(after, "aftercare_checkins", 'status="completed"') == 1
    h.clock.advance(minutes=10)
    later = await _scrape(h)
    assert _value(later, "aftercare_open_escalation_oldest_seconds", 'severity="critical"') == 600


async def test_metrics_without_token_are_loopback_only(db_url: str) -> None:
    async with harness(db_url) as h:
        # the test client connects from 127.0.0.1
        assert (await h.client.get("/metrics")).status == 200
        bad = await h.client.get("/metrics", headers={"Authorization": "Bearer é"})
        assert bad.status == 401


async def test_metrics_are_refused_through_a_trusted_proxy_on_loopback(db_url: str) -> None:
    """Behind a proxy on the same host every request comes from loopback: without a token,
    a request relayed by the proxy is somebody else's."""
    async with harness(db_url, TRUSTED_PROXIES="127.0.0.1") as h:
        resp = await h.client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert resp.status == 403
