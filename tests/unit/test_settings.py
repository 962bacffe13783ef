"""Each invalid setting gives a clear error naming the variable."""

from __future__ import annotations

import pytest

from bot.settings import SettingsError, load_settings

GOOD_SECRET = "s" * 40


def _load(**env: str):  # type: ignore[no-untyped-def]
    env.setdefault("SECRET_KEY", GOOD_SECRET)
    return load_settings(env)


def test_defaults() -> None:
    s = _load()
    assert s.database_url == "sqlite+aiosqlite:///aftercare.db"
    assert s.sms_transport == "console"
    assert s.public_base_url == "http://127.0.0.1:8080"
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert not s.verify_signatures


def test_signatures_on_whenever_token_set() -> None:
    assert _load(TWILIO_AUTH_TOKEN="abc").verify_signatures


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL", "not supported"),
        ({"DATABASE_URL": "::::"}, "DATABASE_URL", "not a database URL"),
        ({"SMS_TRANSPORT": "pigeon"}, "SMS_TRANSPORT", "console, twilio"),
        ({"SMS_TRANSPORT": "twilio"}, "TWILIO_ACCOUNT_SID", "required"),
        ({"TWILIO_ACCOUNT_SID": "XX123"}, "TWILIO_ACCOUNT_SID", "start with 'AC'"),
        ({"TWILIO_MESSAGING_SERVICE_SID": "MG1"}, "TWILIO_MESSAGING_SERVICE_SID", "34"),
        ({"TWILIO_FROM_NUMBER": "555-1234"}, "TWILIO_FROM_NUMBER", "E.164"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL", "http"),
        ({"PUBLIC_BASE_URL": "https://x/?a=1"}, "PUBLIC_BASE_URL", "query"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY", "at least 32"),
        ({"CLINIC_PHONE": "call us"}, "CLINIC_PHONE", "not a valid phone"),
        ({"PORT": "abc"}, "PORT", "whole number"),
        ({"PORT": "70000"}, "PORT", "from 1 to 65535"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "one of"),
        ({"SMS_SEND_TIMEOUT": "soon"}, "SMS_SEND_TIMEOUT", "seconds"),
    ],
)
def test_invalid_values_name_the_variable(
    env: dict[str, str], variable: str, fragment: str
) -> None:
    with pytest.raises(SettingsError) as info:
        _load(**env)
    matching = [p for p in info.value.problems if p.startswith(variable + ":")]
    assert matching, info.value.problems
    assert any(fragment in p for p in matching), matching


def test_secret_key_required_outside_demo() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY: required"):
        load_settings({})
    assert load_settings({}, demo=True).secret_key is None


def test_twilio_transport_complete() -> None:
    s = _load(
        SMS_TRANSPORT="twilio",
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="t" * 32,
        TWILIO_FROM_NUMBER="+12025550100",
    )
    assert s.sms_transport == "twilio"
    assert s.verify_signatures


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        _load(PORT="x", SMS_TRANSPORT="y")
    assert len(info.value.problems) == 2


def test_trusted_proxies_are_cidrs() -> None:
    settings = _load(TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1,::1")
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert _load().trusted_proxies == ()
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES: not an IP address or CIDR: 'proxy'"):
        _load(TRUSTED_PROXIES="10.0.0.0/8,proxy")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # left hops are the client's
        ("10.0.0.2", ["198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # two proxies in a row
        ("10.0.0.2", ["198.51.100.1", "10.0.0.3"], "198.51.100.1"),  # repeated headers
        ("10.0.0.2", ["garbage, 10.0.0.3"], "10.0.0.3"),  # a malformed hop stops the walk
        ("10.0.0.2", [], "10.0.0.2"),
    ],
)
def test_client_address_through_trusted_proxies(
    peer: str, forwarded: list[str], expected: str
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from bot.appkeys import SETTINGS
    from bot.web.client_address import client_address

    app = web.Application()
    app[SETTINGS] = _load(TRUSTED_PROXIES="10.0.0.0/8")
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    request = make_mocked_request("GET", "/", headers=headers, app=app)
    request._transport_peername = (peer, 1234)
    assert client_address(request) == expected


def test_clinic_timezone_and_default_region() -> None:
    s = _load(CLINIC_TIMEZONE="America/Chicago", DEFAULT_REGION="mx")
    assert (s.clinic_timezone, s.default_region) == ("America/Chicago", "MX")
    assert (_load().clinic_timezone, _load().default_region) == ("UTC", "US")
    with pytest.raises(SettingsError, match="CLINIC_TIMEZONE: not an IANA time zone"):
        _load(CLINIC_TIMEZONE="Chicago")
    with pytest.raises(SettingsError, match="DEFAULT_REGION: not a region code"):
        _load(DEFAULT_REGION="USA")
