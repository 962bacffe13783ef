"""Reply parsing: generous with noise, never guessing between meanings."""

from __future__ import annotations

import pytest

from flows.model import ChoiceSpec, IntegerSpec, ScaleSpec, TextSpec, YesNoSpec
from flows.parsing import Parsed, Rejected, default_hint, make_parser, normalize, tokens

SCALE = ScaleSpec.model_validate(
    {
        "type": "scale",
        "options": [
            {"value": 0, "label": "Not at all", "synonyms": ["never", "none"]},
            {"value": 1, "label": {"en": "Several days", "es": "Varios días"}},
            {"value": 2, "label": "More than half the days"},
            {"value": 3, "label": "Nearly every day", "synonyms": {"es": ["casi diario"]}},
        ],
    }
)
YESNO = YesNoSpec.model_validate({"type": "yesno", "synonyms": {"yes": ["totally"]}})
INTEGER = IntegerSpec.model_validate({"type": "integer", "min": 0, "max": 10})
CHOICE = ChoiceSpec.model_validate(
    {
        "type": "choice",
        "options": [
            {"value": "call", "label": "Call me"},
            {"value": "text_back", "label": "Text me", "synonyms": ["sms"]},
            {"value": "nothing", "label": "No thanks"},
        ],
    }
)
NUMERIC_CHOICE = ChoiceSpec.model_validate(
    {
        "type": "choice",
        "options": [{"value": 5, "label": "five mg"}, {"value": 10, "label": "ten mg"}],
    }
)
TEXT = TextSpec.model_validate({"type": "text", "max_length": 10})

scale = make_parser(SCALE, "en")
scale_es = make_parser(SCALE, "es")
yesno = make_parser(YESNO, "en")
integer = make_parser(INTEGER, "en")
choice = make_parser(CHOICE, "en")


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("2", 2),
        ("2.", 2),
        (" 2 ", 2),
        ("#2", 2),
        ("2!", 2),
        ("2 👍", 2),
        ("２", 2),
        ("two", 2),
        ("Two!", 2),
        ("Several days", 1),
        ("several   DAYS.", 1),
        ("nearly every day!!", 3),
        ("Nearly every day 😞", 3),
        ("never", 0),
        ("zero", 0),
        ("1 several days", 1),
        ("I'd say 2", 2),
        ("2 thanks", 2),
    ],
)
def test_scale_accepts(reply: str, value: int) -> None:
    assert scale(reply) == Parsed(value)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("2 or 3", "ambiguous"),
        ("2-3", "ambiguous"),
        ("2 3", "ambiguous"),
        ("7", "out_of_range"),
        ("-1", "out_of_range"),
        ("2.5", "unrecognized"),
        ("several days, nearly every day", "ambiguous"),
        ("1 nearly every day", "ambiguous"),
        ("not 2", "ambiguous"),
        ("", "empty"),
        ("   ", "empty"),
        ("👍", "unrecognized"),
        ("what?", "unrecognized"),
        ("99999999999999999999999", "unrecognized"),
    ],
)
def test_scale_rejects(reply: str, reason: str) -> None:
    assert scale(reply) == Rejected(reason)  # type: ignore[arg-type]


def test_scale_language_labels_and_synonyms() -> None:
    assert scale_es("varios dias") == Parsed(1)
    assert scale_es("Varios días") == Parsed(1)
    assert scale_es("casi diario") == Parsed(3)
    assert scale_es("dos") == Parsed(2)
    assert scale_es("several days") == Parsed(1)  # English label is always understood
    assert scale("casi diario") == Rejected("unrecognized")  # Spanish synonyms only in Spanish


@pytest.mark.parametrize(
    "reply", ["y", "Yes", "YEAH!", "yep", "yup", "sure", "Sí", "si", "yes please", "totally"]
)
def test_yes(reply: str) -> None:
    assert yesno(reply) == Parsed(True)


@pytest.mark.parametrize("reply", ["n", "No", "nope", "nah", "not really", "No thanks.", "no 🙁"])
def test_no(reply: str) -> None:
    assert yesno(reply) == Parsed(False)


@pytest.mark.parametrize("reply", ["ok", "OK", "maybe", "yes and no", "1", "y n"])
def test_yesno_never_guesses(reply: str) -> None:
    assert isinstance(yesno(reply), Rejected)


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        ("7", Parsed(7)),
        ("seven", Parsed(7)),
        ("siete", Parsed(7)),
        ("10!", Parsed(10)),
        ("ten", Parsed(10)),
        ("11", Rejected("out_of_range")),
        ("twenty", Rejected("out_of_range")),
        ("3-4", Rejected("ambiguous")),
        ("about 3", Parsed(3)),
        ("a lot", Rejected("unrecognized")),
    ],
)
def test_integer(reply: str, result: object) -> None:
    assert integer(reply) == result


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        ("1", Parsed("call")),
        ("2", Parsed("text_back")),
        ("call me", Parsed("call")),
        ("SMS", Parsed("text_back")),
        ("text back", Parsed("text_back")),
        ("no thanks", Parsed("nothing")),
        ("4", Rejected("out_of_range")),
        ("call me or text me", Rejected("ambiguous")),
        ("call me, text me", Rejected("ambiguous")),
    ],
)
def test_choice(reply: str, result: object) -> None:
    assert choice(reply) == result


def test_numeric_choice_uses_values_not_positions() -> None:
    parse = make_parser(NUMERIC_CHOICE, "en")
    assert parse("10") == Parsed(10)
    assert parse("1") == Rejected("out_of_range")
    assert parse("five mg") == Parsed(5)


def test_text_answers() -> None:
    parse = make_parser(TEXT, "en")
    assert parse("  hello ") == Parsed("hello")
    assert parse(" ") == Rejected("empty")
    assert parse("x" * 11) == Rejected("too_long")


def test_normalize_and_tokens() -> None:
    assert normalize("Sí, CASI") == "si, casi"
    assert tokens("It's #2!! 👍") == ["its", "2"]
    assert tokens("2-3") == ["2", "3"]
    assert tokens("-3") == ["-3"]


def test_default_hints() -> None:
    assert default_hint(SCALE, "en") == "Please reply with a number from 0 to 3."
    assert default_hint(CHOICE, "en") == "Please reply with a number from 1 to 3."
    assert default_hint(NUMERIC_CHOICE, "en") == "Please reply with a number from 5 to 10."
    assert default_hint(YESNO, "es") == "Por favor responda sí o no."
    assert default_hint(TEXT, "fr") == "Please reply with a short message (up to 10 characters)."


def test_conflicting_synonyms_are_ambiguous_not_guessed() -> None:
    spec = ScaleSpec.model_validate(
        {
            "type": "scale",
            "options": [
                {"value": 0, "label": "a", "synonyms": ["same"]},
                {"value": 1, "label": "b", "synonyms": ["same"]},
            ],
        }
    )
    assert make_parser(spec, "en")("same") == Rejected("ambiguous")


# -- free text: what patients actually write ------------------------------------------------------

yesno_es = make_parser(YESNO, "es")


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("yes I have", True),
        ("yeah, bad headache", True),
        ("yes, bad headache last night", True),
        ("yep", True),
        ("y", True),
        ("Yesss!!", True),
        ("hi, yes thanks", True),
        ("yes I do", True),
        ("yes but it's gone now", True),
        ("I did", True),
        ("I have", True),
        ("i have had a bad headache", True),
        ("sometimes", True),
        ("a little", True),
        ("no I haven't", False),
        ("nope, all good", False),
        ("not really", False),
        ("nah", False),
        ("Noooo", False),
        ("never", False),
        ("I haven't", False),
        ("i did not", False),
        ("I have no headache", False),
        ("i have never", False),
        ("none of those", False),
    ],
)
def test_yesno_reads_a_sentence_from_its_leading_word_or_form(reply: str, value: bool) -> None:
    assert yesno(reply) == Parsed(value)


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("sí, a veces", True),
        ("Siii", True),
        ("si, me dolio la cabeza", True),
        ("claro que sí", True),
        ("lo he pensado", True),
        ("he tenido dolor de pecho", True),
        ("a veces", True),
        ("nunca", False),
        ("no, nada de eso", False),
        ("no he tenido nada", False),
        ("para nada", False),
    ],
)
def test_yesno_spanish(reply: str, value: bool) -> None:
    assert yesno_es(reply) == Parsed(value)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("maybe", "unsure"),
        ("not sure", "unsure"),
        ("idk", "unsure"),
        ("yes and no", "unsure"),
        ("kind of", "unsure"),
        ("no sé", "unsure"),
        ("tal vez", "unsure"),
        ("no, but my head is pounding", "ambiguous"),
        ("no pero me duele el pecho", "ambiguous"),
        ("what do you mean", "unrecognized"),
        ("ok", "unrecognized"),
    ],
)
def test_yesno_re_asks_doubt_and_turned_denials(reply: str, reason: str) -> None:
    assert yesno(reply) == Rejected(reason)  # type: ignore[arg-type]


def test_an_unsure_reply_is_re_asked_with_a_prompt_that_says_what_to_send() -> None:
    from flows.parsing import retry_hint

    assert retry_hint(YESNO, "unsure", "en", "Please reply YES or NO.") == (
        "If it happened at all, even a little, reply YES. If it did not, reply NO. "
        "Please reply YES or NO."
    )
    assert retry_hint(SCALE, "ambiguous", "es", "Responda 0-3.").startswith("Parece que")
    assert retry_hint(SCALE, "unrecognized", "en", "Reply 0-3.") == "Reply 0-3."


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("several days I guess", 1),
        ("2, rough week", 2),
        ("nearly every day to be honest", 3),
        ("honestly never", 0),
        ("two", 2),
        ("dos", 2),
    ],
)
def test_scale_reads_one_option_inside_a_sentence(reply: str, value: int) -> None:
    assert scale(reply) == Parsed(value) or scale_es(reply) == Parsed(value)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("not nearly every day", "ambiguous"),
        ("never, well several days", "ambiguous"),
        ("I had 2 bad days", "unrecognized"),
        ("between several days and nearly every day", "ambiguous"),
    ],
)
def test_scale_sentences_with_a_negation_or_two_options_are_re_asked(
    reply: str, reason: str
) -> None:
    assert scale(reply) == Rejected(reason)  # type: ignore[arg-type]


def test_affirmative_reads_a_bare_yes_as_the_least_positive_option() -> None:
    item9 = make_parser(SCALE, "en", affirmative=1)
    item9_es = make_parser(SCALE, "es", affirmative=1)
    assert item9("yes") == Parsed(1)
    assert item9("yeah sometimes") == Parsed(1)
    assert item9("yes, nearly every day") == Parsed(3)  # the named option wins
    assert item9_es("sí") == Parsed(1)
    assert item9("no") == Rejected("unrecognized") or item9("no") == Parsed(0)
    assert item9("not sure") != Parsed(1)
    assert scale("yes") == Rejected("unrecognized")  # without it, a yes is re-asked
