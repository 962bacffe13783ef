"""Opt-out keyword classification: whole message only, case and edges ignored."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.keywords import HELP_WORDS, START_WORDS, STOP_WORDS, Keyword, classify


@pytest.mark.parametrize("word", sorted(STOP_WORDS))
def test_every_stop_word(word: str) -> None:
    assert classify(word) is Keyword.STOP
    assert classify(word.lower()) is Keyword.STOP
    assert classify(word.title()) is Keyword.STOP


@pytest.mark.parametrize("word", sorted(START_WORDS))
def test_every_start_word(word: str) -> None:
    assert classify(word) is Keyword.START
    assert classify(word.lower(), opted_out=True) is Keyword.START


@pytest.mark.parametrize("word", sorted(HELP_WORDS))
def test_every_help_word(word: str) -> None:
    assert classify(word) is Keyword.HELP
    assert classify(f" {word.lower()}? ") is Keyword.HELP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stop", Keyword.STOP),
        ("Stop.", Keyword.STOP),
        (" stop!! ", Keyword.STOP),
        ("\tSTOP\n", Keyword.STOP),
        ("sToP", Keyword.STOP),
        ("“Stop”", Keyword.STOP),
        ("STOP 🛑", Keyword.STOP),
        ("...unsubscribe...", Keyword.STOP),
        ("Cancel!", Keyword.STOP),
        ("end", Keyword.STOP),
        ("Quit", Keyword.STOP),
        ("optout", Keyword.STOP),
        ("opt out", Keyword.STOP),
        ("Opt-Out", Keyword.STOP),
        ("OPT  OUT.", Keyword.STOP),
        ("ＳＴＯＰ", Keyword.STOP),  # fullwidth, as some keyboards send
        ("start", Keyword.START),
        ("Unstop!", Keyword.START),
        ("help", Keyword.HELP),
        ("Help?", Keyword.HELP),
        ("info", Keyword.HELP),
    ],
)
def test_keywords(text: str, expected: Keyword) -> None:
    assert classify(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!!",
        "stop texting me please",
        "please stop",
        "stopped",
        "stops",
        "non-stop",
        "helpful",
        "help me",
        "I need help",
        "end of story",
        "the end",
        "weekend",
        "s t o p",
        " s t o p",
        "st op",
        "information",
        "starting",
        "start over",
        "2",
        "no",
        "yes",
        "YES",
        "cancel my appointment",
        "quit smoking",
        "opt outside",
        "optional",
    ],
)
def test_not_keywords(text: str) -> None:
    assert classify(text) is None


def test_yes_only_restarts_an_opted_out_patient() -> None:
    assert classify("yes") is None
    assert classify("Yes!") is None
    assert classify("yes", opted_out=True) is Keyword.START
    assert classify(" YES. ", opted_out=True) is Keyword.START
    assert classify("yes please", opted_out=True) is None


def test_opted_out_does_not_change_other_words() -> None:
    assert classify("stop", opted_out=True) is Keyword.STOP
    assert classify("help", opted_out=True) is Keyword.HELP
    assert classify("no", opted_out=True) is None


def test_keyword_values_are_strings() -> None:
    assert Keyword.STOP == "STOP"
    assert str(Keyword.HELP) == "HELP"


@given(st.text(max_size=300), st.booleans())
def test_never_raises(text: str, opted_out: bool) -> None:
    result = classify(text, opted_out=opted_out)
    assert result is None or isinstance(result, Keyword)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ALTO", Keyword.STOP),
        ("parar", Keyword.STOP),
        ("Baja.", Keyword.STOP),
        ("cancelar", Keyword.STOP),
        ("COMENZAR", Keyword.START),
        ("inicio", Keyword.START),
        ("ayuda", Keyword.HELP),
        ("AYUDA!", Keyword.HELP),
    ],
)
def test_spanish_keywords(text: str, expected: Keyword) -> None:
    assert classify(text) is expected


def test_si_only_restarts_an_opted_out_patient() -> None:
    assert classify("sí", opted_out=True) is Keyword.START
    assert classify("Si", opted_out=True) is Keyword.START
    assert classify("si") is None


def test_spanish_system_replies_stay_in_gsm7_and_help_fits_two_segments() -> None:
    from bot.services.inbound import _texts
    from bot.settings import load_settings
    from flows import gsm

    settings = load_settings(
        {
            "CLINIC_NAME": "Clinica del Valle Central",
            "CLINIC_PHONE": "+12025550100",
            "SECRET_KEY": "k" * 40,
        }
    )
    texts = _texts(settings, "es")
    for name, body in texts.items():
        encoding, segments = gsm.measure(body)
        assert encoding == "GSM-7", name
        assert segments <= 2, name
