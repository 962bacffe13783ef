"""Crisis-language detection (corpus, negation, normalization) and the crisis reply."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from flows.crisis_rules import RULES
from flows.gsm import gsm7_length, is_gsm7
from flows.safety import (
    CRISIS_REPLY_MAX_SEPTETS,
    LEXICON,
    CrisisCategory,
    CrisisMatch,
    crisis_reply,
    detect,
    normalize,
)

CORPUS_PATH = Path(__file__).parent / "data" / "crisis_corpus.yaml"


def _load_corpus() -> dict[str, Any]:
    with CORPUS_PATH.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


CORPUS = _load_corpus()
POSITIVES: list[tuple[str, CrisisCategory]] = [
    (str(text), CrisisCategory(category))
    for category, texts in CORPUS["positives"].items()
    for text in texts
]
NEGATIVES: list[str] = [str(text) for text in CORPUS["negatives"]]
LEXICON_IDS = {entry.id for entry in LEXICON}
RULE_IDS = LEXICON_IDS | {rule.id for rule in RULES} | {"model", "blood_pressure"}


# ---------------------------------------------------------------- corpus


def test_corpus_is_large_enough_and_covers_every_category() -> None:
    assert len(POSITIVES) >= 80
    assert len(NEGATIVES) >= 80
    assert {category for _, category in POSITIVES} <= set(CrisisCategory)
    assert len({text for text, _ in POSITIVES}) == len(POSITIVES), "duplicate positive"
    assert len(set(NEGATIVES)) == len(NEGATIVES), "duplicate negative"


@pytest.mark.parametrize(("text", "category"), POSITIVES)
def test_positive_is_detected_with_its_category(text: str, category: CrisisCategory) -> None:
    match = detect(text)
    assert match is not None, f"missed: {text!r} -> {normalize(text)!r}"
    assert match.category is category, f"{text!r}: {match}"
    assert match.phrase in RULE_IDS


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative_is_not_detected(text: str) -> None:
    assert detect(text) is None, f"false alarm: {text!r} -> {normalize(text)!r}"


def test_every_lexicon_entry_is_exercised_by_the_corpus() -> None:
    hit = {m.phrase for text, _ in POSITIVES if (m := detect(text)) is not None}
    assert LEXICON_IDS - hit == set()


# ---------------------------------------------------------------- the match


def test_match_is_frozen_and_carries_an_id_not_the_patients_words() -> None:
    text = "honestly I want to kill myself, my name is Jane Doe"
    match = detect(text)
    assert match == CrisisMatch(CrisisCategory.SUICIDAL, "kill_myself")
    assert re.fullmatch(r"[a-z_]+", match.phrase)
    assert "jane" not in match.phrase
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.phrase = "x"  # type: ignore[misc]


def test_category_values_are_stable_strings() -> None:
    assert [str(c) for c in CrisisCategory] == [
        "suicidal",
        "self_harm",
        "overdose",
        "harm_to_others",
        "medical_emergency",
        "psychosis_command",
    ]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("i took all my pills and i want to die", CrisisCategory.SUICIDAL),
        ("chest pain and i want to kill myself", CrisisCategory.SUICIDAL),
        ("I took the whole bottle and can't breathe", CrisisCategory.OVERDOSE),
        ("i cut myself and now i cant breathe", CrisisCategory.SELF_HARM),
    ],
)
def test_most_severe_category_wins(text: str, category: CrisisCategory) -> None:
    match = detect(text)
    assert match is not None
    assert match.category is category


# ---------------------------------------------------------------- negation


@pytest.mark.parametrize(
    "text",
    [
        "I'm not suicidal",
        "not feeling suicidal",
        "no thoughts of suicide",
        "I don't want to die",
        "I do not want to die",
        "i would never kill myself",
        "i wouldn't hurt myself",
        "haven't had thoughts of hurting myself",
        "without chest pain",
        "denies suicidal thoughts",
        "i'm fine. no thoughts of hurting myself",
        "dont worry im not going to kill myself",
        "no me quiero morir",
    ],
)
def test_negated(text: str) -> None:
    assert detect(text) is None


@pytest.mark.parametrize(
    "text",
    [
        # a negation does not mask a later positive clause
        "I'm not ok, I want to die",
        "im not ok i want to die",
        "No, I want to kill myself",
        "no i want to kill myself",
        "no. want to die",
        "I'm not going to lie, I want to die",
        "not suicidal but i want to die",
        "I don't want to die but I don't want to live",
        "no chest pain but i cant breathe",
        # the negation is part of the phrase
        "I don't want to live",
        "i do not want to be alive",
        "i no longer want to live",
        "there's no reason to live",
        # a negator too far before the phrase does not count
        "no matter what anyone says to me i want to die",
    ],
)
def test_negation_is_local(text: str) -> None:
    assert detect(text) is not None


# ---------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'M GOING TO KILL MYSELF", "im going to kil myself"),
        ("I\u2019m  not\tok", "im not ok"),
        ("gonna kms", "going to kil myself"),
        ("i wanna diiiie", "i want to die"),
        ("i od'd", "i overdosed"),
        ("i oded", "i overdosed"),
        ("od on my meds", "overdose on my meds"),
        ("I feel odd", "i fel od"),
        ("killmyself", "kil myself"),
        ("self-harm", "self harm"),
        ("no, I do not", "no | i dont"),
        ("fine but sad", "fine | sad"),
        ("quiero morirme \u00bfok?", "quiero morirme ok |"),
        ("Su\u00edcidio", "suicidio"),
        ("k\u200bms", "kil myself"),  # zero-width space removed
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    ["I WANT TO DIE", "i want to die!!!", "i want   to die", "i want to dieeee", "I want to díe"],
)
def test_case_spacing_accents_and_repeats_are_ignored(text: str) -> None:
    assert detect(text) == CrisisMatch(CrisisCategory.SUICIDAL, "want_to_die")


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00",
        "\x00kill myself\x00",
        "😀" * 500,
        "a" * 10_000,
        "kill " * 2_000,
        "no " * 3_000 + "i want to die",
        "\ud800",  # lone surrogate
        "|||",
        "\u0301\u0301",
    ],
)
def test_odd_inputs_never_raise(text: str) -> None:
    detect(text)


@given(st.text(max_size=10_000))
def test_never_raises_on_any_text(text: str) -> None:
    result = detect(text)
    assert result is None or result.phrase in RULE_IDS


@given(st.lists(st.sampled_from(["i", "want", "to", "die", "not", "no", ",", "kill", "myself"])))
def test_never_raises_on_lexicon_words(words: list[str]) -> None:
    detect(" ".join(words))


# ---------------------------------------------------------------- lexicon sanity


def test_lexicon_rows_are_well_formed() -> None:
    for entry in LEXICON:
        assert re.fullmatch(r"[a-z][a-z_]*", entry.id), entry
        assert entry.leads.split(), entry
        assert entry.tail == "" or entry.tail[0] in " (\\|", entry
        re.compile(entry.tail)


# ---------------------------------------------------------------- crisis reply


@pytest.mark.parametrize("language", ["en", "EN", "en-US", "fr", "", "xx-YY"])
def test_reply_english(language: str) -> None:
    reply = crisis_reply(language, "Sunrise Clinic", "+1 555 010 0100")
    assert "call or text 988" in reply
    assert "Suicide & Crisis Lifeline" in reply
    assert "call 911" in reply
    assert "Your care team at Sunrise Clinic has been alerted." in reply
    assert "+1 555 010 0100" in reply


@pytest.mark.parametrize("language", ["es", "ES", "es-MX", "es_US"])
def test_reply_spanish(language: str) -> None:
    reply = crisis_reply(language, "Clínica Sol", "+1 555 010 0100")
    assert "988" in reply
    assert "llame al 911" in reply
    assert "Clinica Sol ya fue avisado" in reply
    assert "+1 555 010 0100" in reply


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize(("clinic", "phone"), [("", ""), ("  ", " "), (".", "-"), ("", "555")])
def test_reply_without_clinic_or_phone_has_no_dangling_text(
    language: str, clinic: str, phone: str
) -> None:
    reply = crisis_reply(language, clinic, phone)
    assert "  " not in reply
    assert " ." not in reply
    assert " ," not in reply
    assert " at ." not in reply and " en ." not in reply
    assert reply.endswith(".")
    assert "alerted." in reply or "avisado." in reply


@pytest.mark.parametrize("language", ["en", "es"])
def test_reply_is_gsm7_and_fits_two_segments(language: str) -> None:
    for clinic, phone in [
        ("", ""),
        (
            "Sunrise Ketamine & Esketamine Treatment Center of Greater Springfield",
            "+1 (555) 010-0100",
        ),
        ("Clínica Señor Ñandú — Centro 💊 “Salud”", "+1 555 010 0100 ext. 12345678901234567890"),
        ("X" * 500, "9" * 500),
        ("€[]{}^~\\|", "€"),
    ]:
        reply = crisis_reply(language, clinic, phone)
        assert is_gsm7(reply), reply
        assert gsm7_length(reply) <= CRISIS_REPLY_MAX_SEPTETS, reply


@given(st.text(), st.text(), st.text(max_size=10))
def test_reply_always_gsm7_and_bounded(clinic: str, phone: str, language: str) -> None:
    reply = crisis_reply(language, clinic, phone)
    assert is_gsm7(reply)
    assert gsm7_length(reply) <= CRISIS_REPLY_MAX_SEPTETS
    assert "988" in reply and "911" in reply


def test_reply_echoed_back_is_still_detected() -> None:
    # The reply itself mentions "Suicide"; it is outbound, but an echo must not loop
    # silently: it is detected, which is the conservative outcome.
    assert detect(crisis_reply("en", "", "")) is not None
