"""GSM-7 / UCS-2 detection and segment counting at exact boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.gsm import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    encoding,
    gsm7_length,
    is_gsm7,
    measure,
    non_gsm7_chars,
    segment_count,
)

CYR = "ж"  # in the BMP, outside GSM-7: one UTF-16 code unit
EMOJI = "😀"  # outside the BMP: two UTF-16 code units


def test_alphabet_sizes() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus the escape
    assert set(GSM7_EXTENSION) == set("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello, how are you today? 2",
        "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
        "¡¿ÄÖÑÜ§äöñüà",
        "€[]{}^~\\|",
    ],
)
def test_gsm7_texts(text: str) -> None:
    assert is_gsm7(text)
    assert encoding(text) == "GSM-7"
    assert non_gsm7_chars(text) == []


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("it’s fine", ["’"]),
        ("“quoted” “again”", ["“", "”"]),
        (f"hi {EMOJI}{EMOJI}", [EMOJI]),
        ("ç is not Ç", ["ç"]),
        ("á", ["á"]),
        ("`tick`", ["`"]),
        ("\x1b", ["\x1b"]),
        ("\t", ["\t"]),
    ],
)
def test_non_gsm7(text: str, bad: list[str]) -> None:
    assert not is_gsm7(text)
    assert encoding(text) == "UCS-2"
    assert non_gsm7_chars(text) == bad


def test_gsm7_length_counts_extension_twice() -> None:
    assert gsm7_length("") == 0
    assert gsm7_length("abc") == 3
    assert gsm7_length("€") == 2
    assert gsm7_length("a[b]c") == 7
    assert gsm7_length("€[]{}^~\\|\f") == 20


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 459, 3),
        ("a" * 460, 4),
        # extension characters count two septets
        ("€" * 80, 1),
        ("a" + "€" * 80, 2),
        ("a" * 159 + "€", 2),
        ("a" * 158 + "€", 1),
        # an escape pair is never split: 152 + pair does not fit in 153
        ("a" * 152 + "€" + "a" * 10, 2),
        ("a" * 152 + "€" + "a" * 152, 3),
        ("a" * 151 + "€" + "a" * 153, 2),
        # UCS-2
        (CYR * 70, 1),
        (CYR * 71, 2),
        (CYR * 134, 2),
        (CYR * 135, 3),
        ("a" * 69 + "’", 1),
        ("a" * 70 + "’", 2),
        (EMOJI * 35, 1),
        (EMOJI * 36, 2),
        ("a" * 68 + EMOJI, 1),
        ("a" * 69 + EMOJI, 2),
        # a surrogate pair is never split: 66 + emoji does not fit in 67
        (CYR * 66 + EMOJI + CYR * 10, 2),
        (CYR * 66 + EMOJI + CYR * 66, 3),
        (CYR * 65 + EMOJI + CYR * 67, 2),
    ],
)
def test_segment_count(text: str, segments: int) -> None:
    assert segment_count(text) == segments


def test_single_non_gsm_char_switches_whole_message() -> None:
    text = "a" * 100
    assert segment_count(text) == 1
    assert segment_count(text + "’") == 2


@given(st.text(max_size=2000))
def test_never_raises_and_consistent(text: str) -> None:
    n = segment_count(text)
    assert n >= 1
    assert is_gsm7(text) == (encoding(text) == "GSM-7") == (non_gsm7_chars(text) == [])
    if is_gsm7(text):
        septets = gsm7_length(text)
        assert septets >= len(text)
        assert n == 1 if septets <= 160 else n >= -(-septets // 153)


def _reference_segments(text: str) -> int:
    """Segments by packing every unit, the slow way the fast paths must agree with."""
    if is_gsm7(text):
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        single, per = 160, 153
    else:
        widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
        single, per = 70, 67
    if sum(widths) <= single:
        return 1
    segments, used = 1, 0
    for w in widths:
        if used + w > per:
            segments, used = segments + 1, 0
        used += w
    return segments


def test_measure_agrees_with_unit_packing_at_every_boundary() -> None:
    pieces = ["a", "€", "’", "😀", "é", " "]
    for length in (0, 1, 69, 70, 71, 134, 135, 153, 154, 159, 160, 161, 201, 306, 307, 460):
        for fill in pieces:
            for tail in ["", *pieces]:
                text = fill * length + tail
                assert measure(text) == (encoding(text), _reference_segments(text)), (
                    fill,
                    length,
                    tail,
                )
                assert segment_count(text) == _reference_segments(text)
