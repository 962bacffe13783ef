"""Templates: own substitution, language pick, no attribute access."""

from __future__ import annotations

from flows.text import mapping_resolver, parse, pick, render, stray_brace, variables

VALUES = {"first_name": "Ana", "answer.q1": "2", "score.phq9": "12"}


def test_render_substitutes_known_names() -> None:
    out = render("Hi {first_name}: q1={answer.q1}, PHQ-9 {score.phq9}", mapping_resolver(VALUES))
    assert out == "Hi Ana: q1=2, PHQ-9 12"


def test_literal_braces_and_unknown_names() -> None:
    assert (
        render("{{first_name}} is {first_name}", mapping_resolver(VALUES)) == "{first_name} is Ana"
    )
    assert render("{unknown} x", mapping_resolver(VALUES)) == "{unknown} x"


def test_no_attribute_access_or_format_specs() -> None:
    sneaky = "{first_name.__class__} {first_name!r} {first_name:>10} {0}"
    assert render(sneaky, mapping_resolver(VALUES)) == sneaky
    assert variables(sneaky) == []


def test_parse_and_variables() -> None:
    assert parse("a {x} b") == (("a ", "x"), (" b", None))
    assert variables("{band.phq9} {question}") == ["band.phq9", "question"]


def test_stray_brace_detection() -> None:
    assert stray_brace("ok {x} {{ }}") is None
    assert stray_brace("bad { here") == 4
    assert stray_brace("bad } here") == 4
    assert stray_brace("{Bad}") == 0


def test_pick_language_with_fallback() -> None:
    text = {"en": "Hello", "es": "Hola"}
    assert pick(text, "es") == "Hola"
    assert pick(text, "fr") == "Hello"
    assert pick("Plain", "es") == "Plain"
