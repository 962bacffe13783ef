"""The fast form parser gives exactly what ``urllib.parse.parse_qsl`` gives (the webhook's
signature check depends on it), and fails where it fails."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.web.forms import parse_form

# the characters that matter to the format, and some that need escaping
_ALPHABET = st.sampled_from([*"ab=&+%;2F0é ", "%zz", "%C3%A9", "%FF", "%2", "+%2B"])


def _standard(body: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_qsl(body, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        return UnicodeDecodeError


def _ours(body: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_form(body)
    except UnicodeDecodeError:
        return UnicodeDecodeError


@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_same_as_parse_qsl_on_any_text(body: str) -> None:
    assert _ours(body) == _standard(body)


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=25))
def test_same_as_parse_qsl_on_encoded_forms(fields: list[tuple[str, str]]) -> None:
    body = urlencode(fields)
    assert _ours(body) == _standard(body)


@pytest.mark.parametrize(
    ("body", "pairs"),
    [
        ("", []),
        ("a=1&b=2", [("a", "1"), ("b", "2")]),
        ("a=&b", [("a", ""), ("b", "")]),
        (
            "Body=Hello+there%21&&To=%2B12025550199",
            [("Body", "Hello there!"), ("To", "+12025550199")],
        ),
        ("a=1=2", [("a", "1=2")]),
    ],
)
def test_examples(body: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_form(body) == pairs


def test_an_escape_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(UnicodeDecodeError):
        parse_form("Body=%FF")
