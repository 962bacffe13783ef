"""SMS encoding facts: GSM-7 vs UCS-2, length in septets, and segment counts.

Why: a single character outside GSM 03.38 (a curly quote, an emoji) switches a
whole message to UCS-2 and cuts a segment from 160 to 70 characters, which
multiplies cost and can split a message mid-sentence on old handsets. Flow
validators and the outbox use these functions to warn authors and to budget
replies. Pure: standard library only, no I/O.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "Encoding",
    "encoding",
    "gsm7_length",
    "is_gsm7",
    "measure",
    "non_gsm7_chars",
    "segment_count",
]

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet (the escape code 0x1B itself is not a character
# that text may contain, so it is left out).
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

# Extension table: each of these is sent as ESC + code, i.e. two septets.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

_GSM7_ALL: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION

_GSM7_SINGLE = 160
_GSM7_CONCAT = 153  # 7 septets go to the concatenation header (UDH)
_UCS2_SINGLE = 70
_UCS2_CONCAT = 67  # code units, 3 go to the UDH


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 basic set or extension table."""
    return _GSM7_ALL.issuperset(text)


def non_gsm7_chars(text: str) -> list[str]:
    """Distinct characters that force UCS-2, in order of first appearance.

    For validator warnings such as "’ (U+2019) makes this message UCS-2".
    """
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in _GSM7_ALL:
            seen.setdefault(ch, None)
    return list(seen)


def gsm7_length(text: str) -> int:
    """Length in septets: extension characters (€ [ ] { } ^ ~ \\ | form feed) count 2.

    Only meaningful for GSM-7 text; characters outside GSM-7 count 1 each.
    """
    return len(text) + sum(1 for ch in text if ch in GSM7_EXTENSION)


def encoding(text: str) -> Encoding:
    """The encoding a carrier will use: GSM-7 when possible, else UCS-2."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def _pack(widths: list[int], single: int, per_segment: int) -> int:
    """Segments needed for units of the given widths, never splitting a unit."""
    if sum(widths) <= single:
        return 1
    segments, used = 1, 0
    for w in widths:
        if used + w > per_segment:
            segments += 1
            used = 0
        used += w
    return segments


def segment_count(text: str) -> int:
    """Billable SMS segments for `text`.

    GSM-7: up to 160 septets in one segment, else 153 per segment, and an
    escape pair (extension character) is never split across segments.
    UCS-2: up to 70 UTF-16 code units in one, else 67 per segment; characters
    outside the BMP (most emoji) take 2 code units and a surrogate pair is not
    split either. Empty text counts as 1 segment, as Twilio bills it.
    """
    return measure(text)[1]


def measure(text: str) -> tuple[Encoding, int]:
    """Encoding and segment count in one pass over the alphabet (the outbox stores both)."""
    if _GSM7_ALL.issuperset(text):
        if GSM7_EXTENSION.isdisjoint(text):
            # every character one septet: no unit can straddle a boundary
            return "GSM-7", _even(len(text), _GSM7_SINGLE, _GSM7_CONCAT)
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return "GSM-7", _pack(widths, _GSM7_SINGLE, _GSM7_CONCAT)
    if max(text) <= "\uffff":
        return "UCS-2", _even(len(text), _UCS2_SINGLE, _UCS2_CONCAT)
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return "UCS-2", _pack(widths, _UCS2_SINGLE, _UCS2_CONCAT)


def _even(units: int, single: int, per_segment: int) -> int:
    """Segments for units of width 1 (what ``_pack`` gives for them, without the list)."""
    if units <= single:
        return 1
    return -(-units // per_segment)
