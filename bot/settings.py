"""Settings, read once from the environment (the README's configuration table).

A wrong value stops the process at start with a message naming the variable,
what was wrong and what is accepted, rather than failing later mid-request.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from db.session import DatabaseURLError, check_url

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///aftercare.db"
TRANSPORTS = ("console", "twilio")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_SECRET_KEY_LENGTH = 32


class SettingsError(ValueError):
    """Every invalid variable, one per line, each naming the variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    sms_transport: str = "console"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_from_number: str | None = None
    twilio_api_base: str | None = None
    public_base_url: str = "http://127.0.0.1:8080"
    secret_key: str | None = None
    clinic_name: str = ""
    clinic_phone: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    log_format: str = "json"
    metrics_token: str | None = None
    demo: bool = False
    send_timeout_s: float = 10.0
    outbox_concurrency: int = 1
    # a high escalation unclaimed this long pages the on-call (critical pages at once)
    page_high_after_minutes: int = 60
    # when messages are read, told to patients who text outside a check-in
    clinic_hours: str = ""
    # the zone pages show times in (with its abbreviation)
    clinic_timezone: str = "UTC"
    # the region of phone numbers typed in national format ("(202) 555-0143")
    default_region: str = "US"
    # reverse proxies whose X-Forwarded-For names the client (none by default)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def verify_signatures(self) -> bool:
        """Signatures are checked whenever an auth token is set, whatever the transport."""
        return bool(self.twilio_auth_token)

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _opt(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def load_settings(
    env: Mapping[str, str] | None = None, *, demo: bool = False, require_secret: bool = True
) -> Settings:
    """Read and check every setting; raise :class:`SettingsError` listing all problems."""
    env = os.environ if env is None else env
    problems: list[str] = []

    database_url = _opt(env, "DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        check_url(database_url)
    except DatabaseURLError as exc:
        problems.append(f"DATABASE_URL: {exc}")

    transport = (_opt(env, "SMS_TRANSPORT") or "console").lower()
    if transport not in TRANSPORTS:
        problems.append(f"SMS_TRANSPORT: must be one of {', '.join(TRANSPORTS)}, got {transport!r}")

    sid = _opt(env, "TWILIO_ACCOUNT_SID")
    token = _opt(env, "TWILIO_AUTH_TOKEN")
    service_sid = _opt(env, "TWILIO_MESSAGING_SERVICE_SID")
    from_number = _opt(env, "TWILIO_FROM_NUMBER")
    if sid is not None and not (sid.startswith("AC") and len(sid) == 34):
        problems.append("TWILIO_ACCOUNT_SID: must start with 'AC' and be 34 characters long")
    if service_sid is not None and not (service_sid.startswith("MG") and len(service_sid) == 34):
        problems.append(
            "TWILIO_MESSAGING_SERVICE_SID: must start with 'MG' and be 34 characters long"
        )
    if from_number is not None and not is_e164(from_number):
        problems.append(
            "TWILIO_FROM_NUMBER: must be a phone number in E.164 form, like +15551234567"
        )
    if transport == "twilio":
        if sid is None:
            problems.append("TWILIO_ACCOUNT_SID: required when SMS_TRANSPORT=twilio")
        if token is None:
            problems.append("TWILIO_AUTH_TOKEN: required when SMS_TRANSPORT=twilio")
        if service_sid is None and from_number is None:
            problems.append(
                "TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER: one is required "
                "when SMS_TRANSPORT=twilio"
            )

    public_base_url = (_opt(env, "PUBLIC_BASE_URL") or "http://127.0.0.1:8080").rstrip("/")
    parts = urlsplit(public_base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(
            f"PUBLIC_BASE_URL: must be an http:// or https:// URL, got {public_base_url!r}"
        )
    elif parts.query or parts.fragment:
        problems.append("PUBLIC_BASE_URL: must not have a query or fragment")

    secret_key = _opt(env, "SECRET_KEY")
    if secret_key is None and require_secret and not demo:
        problems.append(
            "SECRET_KEY: required (outside `aftercare demo`); generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    elif secret_key is not None and len(secret_key) < MIN_SECRET_KEY_LENGTH:
        problems.append(f"SECRET_KEY: must be at least {MIN_SECRET_KEY_LENGTH} characters long")

    clinic_phone = _opt(env, "CLINIC_PHONE") or ""
    if clinic_phone and not _is_phone(clinic_phone):
        problems.append(f"CLINIC_PHONE: not a valid phone number: {clinic_phone!r}")

    host = _opt(env, "HOST") or "127.0.0.1"
    port = _int(env, "PORT", 8080, 1, 65535, problems)

    log_level = (_opt(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")

    log_format = (_opt(env, "LOG_FORMAT") or "json").lower()
    if log_format not in ("json", "text"):
        problems.append(f"LOG_FORMAT: must be json or text, got {log_format!r}")

    metrics_token = _opt(env, "METRICS_TOKEN")
    if metrics_token is not None and len(metrics_token) < 16:
        problems.append("METRICS_TOKEN: must be at least 16 characters long")

    api_base = _opt(env, "TWILIO_API_BASE")
    if api_base is not None and urlsplit(api_base).scheme not in ("http", "https"):
        problems.append("TWILIO_API_BASE: must be an http:// or https:// URL")

    send_timeout = _float(env, "SMS_SEND_TIMEOUT", 10.0, 0.1, 120.0, problems)
    outbox_concurrency = _int(env, "OUTBOX_CONCURRENCY", 1, 1, 32, problems)
    page_high_after = _int(env, "PAGE_HIGH_AFTER_MINUTES", 60, 1, 24 * 60, problems)
    clinic_hours = " ".join((_opt(env, "CLINIC_HOURS") or "").split())
    if len(clinic_hours) > 60:
        problems.append("CLINIC_HOURS: at most 60 characters, e.g. 'Mon-Fri 08:00-18:00'")

    trusted_proxies = _networks(env, "TRUSTED_PROXIES", problems)
    default_region = (_opt(env, "DEFAULT_REGION") or "US").upper()
    if default_region not in phonenumbers.SUPPORTED_REGIONS:
        problems.append(
            f"DEFAULT_REGION: not a region code phone numbers know: {default_region!r} "
            "(write e.g. US, MX, ES)"
        )
    clinic_timezone = _opt(env, "CLINIC_TIMEZONE") or "UTC"
    try:
        ZoneInfo(clinic_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            f"CLINIC_TIMEZONE: not an IANA time zone: {clinic_timezone!r} "
            "(write e.g. America/New_York)"
        )

    if problems:
        raise SettingsError(problems)
    return Settings(
        database_url=database_url,
        sms_transport=transport,
        twilio_account_sid=sid,
        twilio_auth_token=token,
        twilio_messaging_service_sid=service_sid,
        twilio_from_number=from_number,
        twilio_api_base=api_base,
        public_base_url=public_base_url,
        secret_key=secret_key,
        clinic_name=_opt(env, "CLINIC_NAME") or "",
        clinic_phone=clinic_phone,
        host=host,
        port=port,
        log_level=log_level,
        log_format=log_format,
        metrics_token=metrics_token,
        demo=demo,
        send_timeout_s=send_timeout,
        outbox_concurrency=outbox_concurrency,
        page_high_after_minutes=page_high_after,
        clinic_hours=clinic_hours,
        trusted_proxies=trusted_proxies,
        clinic_timezone=clinic_timezone,
        default_region=default_region,
    )


def _networks(
    env: Mapping[str, str], name: str, problems: list[str]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for item in (_opt(env, name) or "").split(","):
        if not item.strip():
            continue
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            problems.append(
                f"{name}: not an IP address or CIDR: {item.strip()!r} "
                "(write e.g. 10.0.0.0/8,127.0.0.1)"
            )
    return tuple(out)


def _int(
    env: Mapping[str, str], name: str, default: int, lo: int, hi: int, problems: list[str]
) -> int:
    raw = _opt(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}: must be a whole number from {lo} to {hi}, got {raw!r}")
        return default
    if not lo <= value <= hi:
        problems.append(f"{name}: must be from {lo} to {hi}, got {value}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, lo: float, hi: float, problems: list[str]
) -> float:
    raw = _opt(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name}: must be a number of seconds, got {raw!r}")
        return default
    if not lo <= value <= hi:
        problems.append(f"{name}: must be from {lo} to {hi} seconds, got {value}")
    return value


@lru_cache(maxsize=4096)
def is_e164(value: str) -> bool:
    """True for a valid, possible number written in E.164 (``+`` and digits only).

    Cached: every webhook checks its sender, and the metadata lookup costs more than the rest
    of the form handling; a clinic's senders are a small, repeating set."""
    if not value.startswith("+") or not (value[1:].isascii() and value[1:].isdigit()):
        return False
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed)


def parse_phone(text: str, region: str) -> str | None:
    """A phone number as typed ("(202) 555-0143", "+52 55 1234 5678") in E.164, or None
    when it is not a valid number; national forms are read in ``region``."""
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 32:
        return None
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _is_phone(value: str) -> bool:
    try:
        parsed = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(parsed)
