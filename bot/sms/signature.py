"""Twilio webhook signatures, checked against the public URL Twilio called.

Behind a proxy aiohttp sees an internal URL; Twilio signed the public one, so
the URL is rebuilt from ``PUBLIC_BASE_URL`` plus the request's raw path and
query. The library's validator also accepts the URL with or without the
default port, as Twilio may sign either.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from functools import lru_cache

from multidict import MultiDict
from twilio.request_validator import RequestValidator


def public_url(base_url: str, path_qs: str) -> str:
    return base_url.rstrip("/") + path_qs


def params_for_signature(pairs: Sequence[tuple[str, str]]) -> MultiDict[str]:
    """Form pairs as the validator wants them: a multidict, so a repeated key keeps every
    value (the validator reads them with ``getall``)."""
    return MultiDict(pairs)


@lru_cache(maxsize=8)
def _validator(auth_token: str) -> RequestValidator:
    return RequestValidator(auth_token)


def is_valid(
    *, auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """The signature over exactly ``url`` first (what Twilio signs when the webhook is
    configured as ``PUBLIC_BASE_URL`` says: one HMAC); otherwise the validator's own
    check, which also tries the URL with and without its default port. The first is one
    of the URLs the second tries, so nothing it refuses is accepted."""
    if not signature:
        return False
    validator = _validator(auth_token)
    expected = validator.compute_signature(url, params).encode()
    # bytes: compare_digest refuses a str with non-ASCII characters (a forged header may have them)
    if hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return True
    return bool(validator.validate(url, params, signature))


def sign(*, auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """What Twilio would send in ``X-Twilio-Signature`` (the demo phone and tests use it)."""
    return str(RequestValidator(auth_token).compute_signature(url, params))
