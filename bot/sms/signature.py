"""Twilio webhook signatures, checked by the library's ``RequestValidator`` against the
public URL Twilio called.

Behind a proxy aiohttp sees an internal URL; Twilio signed the public one, so the URL is
rebuilt from ``PUBLIC_BASE_URL`` plus the request's raw path and query. The validator also
accepts that URL with or without its default port, as Twilio may sign either.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


def public_url(base_url: str, path_qs: str) -> str:
    return base_url.rstrip("/") + path_qs


def is_valid(
    validator: RequestValidator,
    *,
    url: str,
    params: Mapping[str, str],
    signature: str | None,
) -> bool:
    """Whether ``signature`` is Twilio's over ``url`` and ``params``.

    ``params`` should be a multidict when a key may repeat: the validator signs every value
    of a key (it reads them with ``getall``). A missing header is refused here because the
    validator needs a string; it compares any string (non-ASCII too) without raising.
    """
    if not signature:
        return False
    return bool(validator.validate(url, params, signature))


def sign(*, auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """What Twilio would send in ``X-Twilio-Signature`` (the demo phone and tests use it)."""
    return str(RequestValidator(auth_token).compute_signature(url, params))
