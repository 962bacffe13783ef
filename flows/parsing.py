"""Turning a patient's SMS reply into an answer value, or refusing to guess.

Replies are matched ignoring case, accents, punctuation, emoji, repeated
letters and extra spaces, in English and Spanish. Patients write sentences, not
keywords: a yes/no reply is read from its leading word ("yes I have", "nope,
fine") or from an unambiguous form without the word ("I did", "lo he
pensado"); an option reply from the one option it names ("most days I
guess"). Two meanings ("2 or 3", "yes and no"), doubt ("not sure", "no sé"),
a denial with a "but" after it, or a negated option ("not every day") are
rejected so the engine re-asks with a prompt that says what to send. A wrong
answer recorded silently is worse than one more text.
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

Reason = Literal["empty", "unrecognized", "ambiguous", "unsure", "out_of_range", "too_long"]


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
_UNSURE: Final = Rejected("unsure")
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
    "yeh",
    "yah",
    "ya",
    "ye",
    "yh",
    "yep",
    "yup",
    "yes please",
    "sure",
    "for sure",
    "of course",
    "definitely",
    "absolutely",
    "totally",
    "correct",
    "right",
    "affirmative",
    "uh huh",
    "mhm",
    "si",
    "claro",
    "claro que si",
    "por supuesto",
    "efectivamente",
    "asi es",
]
NO_WORDS: Final = [
    "n",
    "no",
    "nope",
    "nah",
    "nop",
    "nay",
    "not really",
    "not at all",
    "not once",
    "no way",
    "never",
    "negative",
    "none",
    "nothing",
    "nunca",
    "jamas",
    "para nada",
    "en absoluto",
    "nada",
    "ninguno",
    "ninguna",
]
# Forms that answer without the word: "I did", "lo he pensado". Each is a phrase at the start
# of the reply; a negation right after it ("I have not", "I did no such thing") voids it.
YES_FORMS: Final = [
    "i did",
    "i have",
    "ive had",
    "i do",
    "i had",
    "it did",
    "it has",
    "sometimes",
    "at times",
    "occasionally",
    "a little",
    "a bit",
    "a few times",
    "once",
    "twice",
    "still",
    "lo he pensado",
    "lo pense",
    "lo he hecho",
    "lo hice",
    "he tenido",
    "he pensado",
    "tuve",
    "me paso",
    "me ha pasado",
    "a veces",
    "algunas veces",
    "varias veces",
    "una vez",
    "un poco",
    "todavia",
    "aun",
]
NO_FORMS: Final = [
    "i didnt",
    "i did not",
    "i havent",
    "i have not",
    "i hadnt",
    "i dont",
    "i do not",
    "im not",
    "i am not",
    "i wasnt",
    "i was not",
    "i never",
    "it didnt",
    "it hasnt",
    "it wasnt",
    "no he",
    "no lo he",
    "no tuve",
    "no me ha",
    "no me paso",
    "no lo hice",
    "no lo he pensado",
    "nunca lo he",
]
UNSURE: Final = [
    "maybe",
    "not sure",
    "unsure",
    "im not sure",
    "idk",
    "i dont know",
    "dunno",
    "perhaps",
    "possibly",
    "kind of",
    "kinda",
    "sort of",
    "sorta",
    "hard to say",
    "yes and no",
    "yes or no",
    "no se",
    "no lo se",
    "no estoy seguro",
    "no estoy segura",
    "quizas",
    "quiza",
    "tal vez",
    "puede ser",
    "mas o menos",
    "si y no",
]
# Words after a denial that turn it around ("no, but my head hurts"): re-asked.
BUT: Final = frozenset(
    ["but", "although", "though", "except", "however", "pero", "aunque", "excepto"]
)
NEGATIONS: Final = frozenset(
    ["not", "no", "never", "nor", "isnt", "wasnt", "dont", "didnt", "havent", "nunca", "ni"]
)
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


_REPEATS = re.compile(r"([a-z])\1{2,}")


def tokens(text: str) -> list[str]:
    """Numbers (with a sign only when not after a digit) and words; everything else is noise.
    Letters repeated three times or more count once ("yesss", "nooo", "siii")."""
    return [_REPEATS.sub(r"\1", t) for t in _TOKEN.findall(normalize(text[:_MAX_REPLY]))]


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
    # words neither matched nor filler, with their positions
    unknown: list[tuple[int, str]]
    # (position, value) of each matched phrase and number, in order
    found: list[tuple[int, object]]

    @property
    def bad(self) -> bool:
        return bool(self.unknown)


def _scan(words: Sequence[str], table: _Table, numbers: bool) -> _Scan:
    """Longest phrase first at each position, then numbers, then fillers; the rest is unknown."""
    found = _Scan(set(), [], [], [])
    i, n = 0, len(words)
    phrases = table.phrases
    while i < n:
        for size in range(min(table.longest, n - i), 0, -1):
            key = words[i] if size == 1 else " ".join(words[i : i + size])
            value = phrases.get(key)
            if value is not None:
                found.values.add(value)
                found.found.append((i, value))
                i += size
                break
        else:
            word = words[i]
            i += 1
            if numbers:
                if word[-1].isdigit():
                    num = _number(word)
                    if num is None:
                        found.unknown.append((i - 1, word))
                    else:
                        found.numbers.append(num)
                        found.found.append((i - 1, num))
                    continue
                num = NUMBER_WORDS.get(word)
                if num is not None:
                    found.numbers.append(num)
                    found.found.append((i - 1, num))
                    continue
            if word not in FILLERS:
                found.unknown.append((i - 1, word))
    return found


def _match_at(words: Sequence[str], i: int, table: _Table) -> tuple[object, int] | None:
    """The longest phrase of ``table`` starting at ``words[i]``: (value, its length)."""
    for size in range(min(table.longest, len(words) - i), 0, -1):
        value = table.phrases.get(" ".join(words[i : i + size]))
        if value is not None:
            return value, size
    return None


def _contains(words: Sequence[str], table: _Table) -> bool:
    return any(_match_at(words, i, table) is not None for i in range(len(words)))


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


# Free text around an option is read only when it is short enough to be an answer.
_MAX_UNKNOWN = 12


def _free_text_option(scan: _Scan, values: set[object], out_of_range: bool) -> ParseResult:
    """A sentence that names exactly one option ("most days I guess", "2, rough week"): read
    as that option unless a negation comes before it ("not every day") or a number in it is
    not the reply's first word ("I had 2 bad days")."""
    if out_of_range or len(scan.unknown) > _MAX_UNKNOWN or not scan.found:
        return _UNRECOGNIZED
    if _CONFLICT in values or len(values) > 1:
        return _AMBIGUOUS
    if len(values) != 1:
        return _UNRECOGNIZED
    first = scan.found[0][0]
    if any(pos < first and word in NEGATIONS for pos, word in scan.unknown):
        return _AMBIGUOUS
    if scan.numbers and first != 0:
        return _UNRECOGNIZED
    (value,) = values
    assert isinstance(value, bool | int | float | str)
    return Parsed(value)


def _option_parser(
    table: _Table, lookup: Callable[[int], object | None], affirmative: object | None = None
) -> Parser:
    yes_no = _table([(w, True) for w in YES_WORDS])

    def parse(text: str) -> ParseResult:
        words = tokens(text)
        if not words:
            return _EMPTY if not text.strip() else _UNRECOGNIZED
        scan = _scan(words, table, numbers=True)
        values, out_of_range = _numbers_to_values(scan, lookup)
        if affirmative is not None and not values and not out_of_range:
            # "yes" to a question whose every positive answer matters (PHQ-9 item 9)
            lead = _match_at(words, 0, yes_no)
            if lead is not None and not _contains(words, _UNSURE_TABLE):
                return Parsed(affirmative)  # type: ignore[arg-type]
        if scan.bad:
            return _free_text_option(scan, values, out_of_range)
        if out_of_range:
            return _AMBIGUOUS if len(scan.numbers) > 1 else _OUT_OF_RANGE
        return _decide(scan, values)

    return parse


def scale_parser(spec: ScaleSpec, language: str, affirmative: int | None = None) -> Parser:
    """Numbers are the option values; labels and synonyms name an option. With
    ``affirmative``, a bare yes ("yes", "sí") reads as that option."""
    entries: list[tuple[str, AnswerValue]] = []
    for opt in spec.options:
        entries += [(label, opt.value) for label in _labels(opt.label, language)]
        entries += [(s, opt.value) for s in _synonyms(opt.synonyms, language)]
    by_value = {opt.value: opt.value for opt in spec.options}
    return _option_parser(_table(entries), by_value.get, affirmative)


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


_UNSURE_TABLE: Final = _table((w, True) for w in UNSURE)
_FORMS_TABLE: Final = _table([*((w, True) for w in YES_FORMS), *((w, False) for w in NO_FORMS)])
# Greetings and hedges before the answer itself ("hi, yes", "honestly no").
_LEADING: Final = frozenset(
    [
        "hi",
        "hey",
        "hello",
        "hola",
        "um",
        "uh",
        "umm",
        "hmm",
        "well",
        "ok",
        "okay",
        "so",
        "oh",
        "honestly",
        "lol",
        "pues",
        "bueno",
        "mmm",
        "ah",
        "dr",
        "doc",
        "thanks",
        "gracias",
    ]
)


def yesno_parser(spec: YesNoSpec, language: str) -> Parser:
    """Yes or no from the reply's leading word or an unambiguous form, in English and Spanish,
    plus the flow's synonyms; doubt or two answers are re-asked."""
    entries: list[tuple[str, AnswerValue]] = [(w, True) for w in YES_WORDS]
    entries += [(w, False) for w in NO_WORDS]
    entries += [(s, True) for s in _synonyms(spec.synonyms.yes, language)]
    entries += [(s, False) for s in _synonyms(spec.synonyms.no, language)]
    table = _table(entries)

    def parse(text: str) -> ParseResult:
        words = tokens(text)
        if not words:
            return _EMPTY if not text.strip() else _UNRECOGNIZED
        if _contains(words, _UNSURE_TABLE):
            return _UNSURE
        scan = _scan(words, table, numbers=False)
        if not scan.bad:
            return _decide(scan, scan.values)
        start = 0
        while start < len(words) and words[start] in _LEADING:
            start += 1
        lead = _match_at(words, start, table)
        if lead is None:
            lead = _match_at(words, start, _FORMS_TABLE)
            if lead is None:
                return _UNRECOGNIZED
            value, size = lead
            after = words[start + size : start + size + 2]
            if value is True and any(w in NEGATIONS for w in after):
                return Parsed(False)  # "I have no headache", "I have never"
        value, size = lead
        if value is _CONFLICT:
            return _AMBIGUOUS
        tail = words[start + size :]
        if value is False and any(w in BUT for w in tail):
            return _AMBIGUOUS  # "no, but my head hurts": re-asked rather than read as no
        assert isinstance(value, bool)
        return Parsed(value)

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


def make_parser(spec: AnswerSpec, language: str, affirmative: int | None = None) -> Parser:
    """The parser for ``spec`` in ``language`` (build once per flow and language, then reuse)."""
    if isinstance(spec, ScaleSpec):
        return scale_parser(spec, language, affirmative)
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
        "unsure": "If it happened at all, even a little, reply YES. If it did not, reply NO.",
        "one": "That looks like two answers.",
        "text": "Please reply with a short message (up to {high} characters).",
    },
    "es": {
        "range": "Por favor responda con un número del {low} al {high}.",
        "yesno": "Por favor responda sí o no.",
        "unsure": "Si le ha pasado aunque sea un poco, responda SI. Si no le ha pasado, responda NO.",
        "one": "Parece que respondió dos opciones.",
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


def retry_hint(spec: AnswerSpec, reason: Reason, language: str, hint: str) -> str:
    """The re-ask text: the question's hint, led by what was wrong when the patient was unsure
    or gave two answers, so the next reply can be read."""
    table = _HINTS.get(language, _HINTS["en"])
    if reason in ("unsure", "ambiguous"):
        lead = table["unsure"] if isinstance(spec, YesNoSpec) else table["one"]
        return f"{lead} {hint}"
    return hint
