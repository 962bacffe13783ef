"""Turning a patient's SMS reply into an answer value, or refusing to guess.

Replies are matched ignoring case, accents, punctuation, emoji and extra
spaces. A reply must consist only of things we recognise (a number, a number
word, an option label or synonym, a few filler words like "I'd say"); anything
else, two different meanings ("2 or 3", "2-3"), or a number outside the scale
is rejected so the engine re-asks. A wrong answer recorded silently is worse
than one more text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from flows.model import (
    AnswerSpec,
    AnswerValue,
    ChoiceSpec,
    IntegerSpec,
    ScaleSpec,
    Synonyms,
    TextSpec,
    YesNoSpec,
)
from flows.text import pick

Reason = Literal["empty", "unrecognized", "ambiguous", "out_of_range", "too_long"]


@dataclass(frozen=True, slots=True)
class Parsed:
    """The reply was understood as ``value``."""

    value: AnswerValue


@dataclass(frozen=True, slots=True)
class Rejected:
    """The reply was not understood; the engine re-asks with the hint."""

    reason: Reason


ParseResult = Parsed | Rejected
Parser = Callable[[str], ParseResult]

_EMPTY: Final = Rejected("empty")
_UNRECOGNIZED: Final = Rejected("unrecognized")
_AMBIGUOUS: Final = Rejected("ambiguous")
_OUT_OF_RANGE: Final = Rejected("out_of_range")
_TOO_LONG: Final = Rejected("too_long")

_TOKEN = re.compile(r"(?<![\d.,])-?\d+(?:[.,]\d+)*|[^\W\d_]+")
_APOSTROPHES = str.maketrans("", "", "'’`´")
_MAX_DIGITS = 9
_MAX_REPLY = 2000  # characters inspected; longer choice replies are not answers

_EN_NUMBERS: Final = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_ES_NUMBERS: Final = "cero uno dos tres cuatro cinco seis siete ocho nueve diez"
NUMBER_WORDS: Final[Mapping[str, int]] = {
    **{w: i for i, w in enumerate(_EN_NUMBERS.split(" "))},
    **{w: i for i, w in enumerate(_ES_NUMBERS.split(" "))},
    "none": 0,
    "una": 1,
}
"""English zero..twenty and Spanish cero..diez; "none" counts as 0."""

YES_WORDS: Final = [
    "y",
    "yes",
    "yeah",
    "yea",
    "yah",
    "ya",
    "yep",
    "yup",
    "yes please",
    "sure",
    "definitely",
    "absolutely",
    "correct",
    "affirmative",
    "si",
    "claro",
]
NO_WORDS: Final = ["n", "no", "nope", "nah", "nop", "not really", "not at all", "negative"]
FILLERS: Final = frozenset(
    [
        "i",
        "im",
        "id",
        "ill",
        "ive",
        "say",
        "would",
        "think",
        "guess",
        "its",
        "it",
        "is",
        "a",
        "about",
        "answer",
        "my",
        "the",
        "um",
        "uh",
        "hmm",
        "well",
        "thanks",
        "thank",
        "you",
        "thx",
        "ty",
        "please",
        "pls",
        "ok",
        "okay",
        "so",
        "oh",
        "hi",
        "hey",
        "hello",
        "lol",
        "haha",
        "today",
        "yo",
        "creo",
        "que",
        "es",
        "mi",
        "respuesta",
        "gracias",
        "hola",
        "pues",
        "bueno",
        "diria",
    ]
)
"""Words ignored around an answer. Never negations: "not 2" must not read as 2."""


def normalize(text: str) -> str:
    """Casefold and strip accents so "Sí" matches "si" and "NEARLY" matches "nearly"."""
    if text.isascii():
        return text.lower().translate(_APOSTROPHES)
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_APOSTROPHES)


def tokens(text: str) -> list[str]:
    """Numbers (with a sign only when not after a digit) and words; everything else is noise."""
    return _TOKEN.findall(normalize(text[:_MAX_REPLY]))


def phrase(text: str) -> str:
    """The canonical form of a label or synonym, as :func:`tokens` would see it."""
    return " ".join(tokens(text))


_CONFLICT: Final = object()


@dataclass(frozen=True, slots=True)
class _Table:
    """Phrases (space-joined tokens) to values, and the longest phrase length."""

    phrases: Mapping[str, object]
    longest: int


def _table(entries: Iterable[tuple[str, AnswerValue]]) -> _Table:
    phrases: dict[str, object] = {}
    longest = 1
    for raw, value in entries:
        key = phrase(raw)
        if not key:
            continue
        old = phrases.get(key)
        phrases[key] = value if old is None or old == value else _CONFLICT
        longest = max(longest, key.count(" ") + 1)
    return _Table(phrases, longest)


def _number(token: str) -> int | None:
    digits = token.lstrip("-")
    if not digits.isdecimal() or len(digits) > _MAX_DIGITS:
        return None
    return int(token)


@dataclass(slots=True)
class _Scan:
    values: set[object]
    numbers: list[int]
    bad: bool


def _scan(words: Sequence[str], table: _Table, numbers: bool) -> _Scan:
    """Longest phrase first at each position, then numbers, then fillers; anything else is bad."""
    found = _Scan(set(), [], False)
    i, n = 0, len(words)
    phrases = table.phrases
    while i < n:
        for size in range(min(table.longest, n - i), 0, -1):
            key = words[i] if size == 1 else " ".join(words[i : i + size])
            value = phrases.get(key)
            if value is not None:
                found.values.add(value)
                i += size
                break
        else:
            word = words[i]
            i += 1
            if numbers:
                if word[-1].isdigit():
                    num = _number(word)
                    if num is None:
                        found.bad = True
                    else:
                        found.numbers.append(num)
                    continue
                num = NUMBER_WORDS.get(word)
                if num is not None:
                    found.numbers.append(num)
                    continue
            if word not in FILLERS:
                found.bad = True
    return found


def _synonyms(syn: Synonyms, language: str) -> list[str]:
    if isinstance(syn, list):
        return list(syn)
    out = list(syn.get(language, ()))
    if language != "en":
        out += syn.get("en", ())
    return out


def _labels(label: str | Mapping[str, str], language: str) -> list[str]:
    return list({pick(label, language), pick(label, "en")})


def _decide(scan: _Scan, values: set[object]) -> ParseResult:
    if scan.bad:
        return _UNRECOGNIZED
    if _CONFLICT in values:
        return _AMBIGUOUS
    if not values:
        return _UNRECOGNIZED
    if len(values) > 1:
        return _AMBIGUOUS
    (value,) = values
    assert isinstance(value, bool | int | float | str)
    return Parsed(value)


def _numbers_to_values(
    scan: _Scan, lookup: Callable[[int], object | None]
) -> tuple[set[object], bool]:
    values = set(scan.values)
    out_of_range = False
    for num in scan.numbers:
        value = lookup(num)
        if value is None:
            out_of_range = True
        else:
            values.add(value)
    return values, out_of_range


def _option_parser(table: _Table, lookup: Callable[[int], object | None]) -> Parser:
    def parse(text: str) -> ParseResult:
        words = tokens(text)
        if not words:
            return _EMPTY if not text.strip() else _UNRECOGNIZED
        scan = _scan(words, table, numbers=True)
        values, out_of_range = _numbers_to_values(scan, lookup)
        if out_of_range and not scan.bad:
            return _AMBIGUOUS if len(scan.numbers) > 1 else _OUT_OF_RANGE
        return _decide(scan, values)

    return parse


def scale_parser(spec: ScaleSpec, language: str) -> Parser:
    """Numbers are the option values; labels and synonyms name an option."""
    entries: list[tuple[str, AnswerValue]] = []
    for opt in spec.options:
        entries += [(label, opt.value) for label in _labels(opt.label, language)]
        entries += [(s, opt.value) for s in _synonyms(opt.synonyms, language)]
    by_value = {opt.value: opt.value for opt in spec.options}
    return _option_parser(_table(entries), by_value.get)


def choice_parser(spec: ChoiceSpec, language: str) -> Parser:
    """Numbers are the values if all are numeric, else 1-based positions."""
    entries: list[tuple[str, AnswerValue]] = []
    for opt in spec.options:
        entries += [(label, opt.value) for label in _labels(opt.label, language)]
        entries += [(s, opt.value) for s in _synonyms(opt.synonyms, language)]
        if isinstance(opt.value, str):
            entries.append((opt.value.replace("_", " "), opt.value))
    numeric = all(isinstance(opt.value, int) for opt in spec.options)
    numbers: dict[int, object] = (
        {int(opt.value): opt.value for opt in spec.options}
        if numeric
        else {i: opt.value for i, opt in enumerate(spec.options, start=1)}
    )
    return _option_parser(_table(entries), numbers.get)


def integer_parser(spec: IntegerSpec) -> Parser:
    """Digits or number words, within ``[min, max]``."""
    empty = _Table({}, 1)
    low, high = spec.min, spec.max

    def lookup(num: int) -> object | None:
        return num if low <= num <= high else None

    return _option_parser(empty, lookup)


def yesno_parser(spec: YesNoSpec, language: str) -> Parser:
    """Common yes/no words (English, Spanish) plus the flow's synonyms; "ok" is neither."""
    entries: list[tuple[str, AnswerValue]] = [(w, True) for w in YES_WORDS]
    entries += [(w, False) for w in NO_WORDS]
    entries += [(s, True) for s in _synonyms(spec.synonyms.yes, language)]
    entries += [(s, False) for s in _synonyms(spec.synonyms.no, language)]
    table = _table(entries)

    def parse(text: str) -> ParseResult:
        words = tokens(text)
        if not words:
            return _EMPTY if not text.strip() else _UNRECOGNIZED
        scan = _scan(words, table, numbers=False)
        return _decide(scan, scan.values)

    return parse


def text_parser(spec: TextSpec) -> Parser:
    """Any non-empty text up to ``max_length`` characters, stripped."""
    limit = spec.max_length

    def parse(text: str) -> ParseResult:
        value = text.strip()
        if not value:
            return _EMPTY
        if len(value) > limit:
            return _TOO_LONG
        return Parsed(value)

    return parse


def make_parser(spec: AnswerSpec, language: str) -> Parser:
    """The parser for ``spec`` in ``language`` (build once per flow and language, then reuse)."""
    if isinstance(spec, ScaleSpec):
        return scale_parser(spec, language)
    if isinstance(spec, ChoiceSpec):
        return choice_parser(spec, language)
    if isinstance(spec, IntegerSpec):
        return integer_parser(spec)
    if isinstance(spec, YesNoSpec):
        return yesno_parser(spec, language)
    return text_parser(spec)


def phrase_conflicts(entries: Iterable[tuple[str, AnswerValue]]) -> list[tuple[str, str]]:
    """Pairs ``(phrase, text)`` where a label/synonym means two different values (validator)."""
    seen: dict[str, AnswerValue] = {}
    out: list[tuple[str, str]] = []
    for raw, value in entries:
        key = phrase(raw)
        if key in seen and seen[key] != value:
            out.append((key, raw))
        seen.setdefault(key, value)
    return out


_HINTS: Final[Mapping[str, Mapping[str, str]]] = {
    "en": {
        "range": "Please reply with a number from {low} to {high}.",
        "yesno": "Please reply yes or no.",
        "text": "Please reply with a short message (up to {high} characters).",
    },
    "es": {
        "range": "Por favor responda con un número del {low} al {high}.",
        "yesno": "Por favor responda sí o no.",
        "text": "Por favor responda con un mensaje corto (hasta {high} caracteres).",
    },
}


def default_hint(spec: AnswerSpec, language: str) -> str:
    """The re-ask text used when the answer spec has no ``hint`` of its own."""
    table = _HINTS.get(language, _HINTS["en"])
    if isinstance(spec, YesNoSpec):
        return table["yesno"]
    if isinstance(spec, TextSpec):
        return table["text"].replace("{high}", str(spec.max_length))
    if isinstance(spec, IntegerSpec):
        low, high = spec.min, spec.max
    elif isinstance(spec, ScaleSpec):
        values = [opt.value for opt in spec.options]
        low, high = min(values), max(values)
    elif all(isinstance(opt.value, int) for opt in spec.options):
        nums = [int(opt.value) for opt in spec.options]
        low, high = min(nums), max(nums)
    else:
        low, high = 1, len(spec.options)
    return table["range"].replace("{low}", str(low)).replace("{high}", str(high))
