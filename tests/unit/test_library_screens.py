"""The short screens the protocols added: mania (ASRM), psychotic symptoms, bladder, alcohol
and sedatives; and the protocols that schedule them."""

from __future__ import annotations

import pytest

from bot.library import protocol_sources
from flows.protocol import load_protocol
from tests.unit.test_library import run


@pytest.mark.parametrize(
    ("answers", "total", "escalations"),
    [
        (["0", "0", "0", "0", "0"], 0, []),
        (["1", "1", "1", "1", "1"], 5, []),
        (["often", "1", "2", "occasionally", "0"], 6, [("moderate", "asrm_positive")]),
        (["4", "all the time", "4", "4", "4"], 20, [("moderate", "asrm_positive")]),
    ],
)
def test_mania_screen_uses_the_asrm_cut_off(
    answers: list[str], total: int, escalations: list[tuple[str, str]]
) -> None:
    t = run("mania_screen", answers)
    assert t.scores["asrm"].total == total
    assert t.escalations == escalations


def test_mania_screen_spanish() -> None:
    t = run("mania_screen", ["siempre", "3", "3", "0", "0"], language="es")
    assert t.escalations == [("moderate", "asrm_positive")]
    assert t.messages[1].startswith("1/5 ¿Se ha sentido mas feliz")


@pytest.mark.parametrize(
    ("answers", "escalations"),
    [
        (["no", "no", "no"], []),
        (["no", "yes", "no"], [("high", "psychotic_symptoms")]),
        (["no", "no", "yes"], [("high", "psychotic_symptoms")]),
        (["yes", "no", "no", "no"], [("high", "psychotic_symptoms")]),
        (["yes", "yes they do", "no", "no"], [("critical", "command_hallucinations")]),
        (
            ["yes", "x", "x", "x", "no", "no"],
            [("high", "psychosis_unanswered"), ("high", "psychotic_symptoms")],
        ),
    ],
)
def test_psychosis_screen(answers: list[str], escalations: list[tuple[str, str]]) -> None:
    t = run("psychosis_screen", answers)
    assert t.escalations == escalations


def test_command_hallucinations_get_the_crisis_resources() -> None:
    t = run("psychosis_screen", ["yes", "yes", "no", "no"])
    assert any("988" in m and "911" in m for m in t.messages)


@pytest.mark.parametrize(
    ("answers", "escalations"),
    [
        (["no", "no", "no"], []),
        (["yes", "no", "no"], [("moderate", "urinary_symptoms")]),
        (["no", "yes", "no"], [("moderate", "urinary_symptoms")]),
        (["yes", "yes", "yes"], [("high", "hematuria")]),
        (["no", "no", "si"], [("high", "hematuria")]),
    ],
)
def test_bladder_screen(answers: list[str], escalations: list[tuple[str, str]]) -> None:
    t = run("bladder_screen", answers)
    assert t.escalations == escalations


@pytest.mark.parametrize(
    ("answers", "total", "escalations"),
    [
        # never drinks: the other alcohol questions are skipped
        (["0", "no"], 0, []),
        (["never", "yes"], 0, [("high", "sedative_misuse")]),
        (["1", "0", "0", "no"], 1, []),
        (["2", "1", "1", "no"], 4, [("moderate", "alcohol_risk")]),
        (
            ["daily", "4", "4", "yes"],
            12,
            [("high", "sedative_misuse"), ("moderate", "alcohol_risk")],
        ),
    ],
)
def test_alcohol_sedatives(
    answers: list[str], total: int, escalations: list[tuple[str, str]]
) -> None:
    t = run("alcohol_sedatives", answers)
    assert t.scores["auditc"].total == total
    assert t.escalations == escalations


def test_the_protocols_cover_the_treatments() -> None:
    sources = protocol_sources()
    induction = load_protocol(sources["esketamine_induction"])
    flows = [c.flow for c in induction.checkins]
    assert flows[0] == "post_session" and "phq9" in flows and "mania_screen" in flows
    phq9 = next(c for c in induction.checkins if c.flow == "phq9")
    assert phq9.recurring is not None and phq9.recurring.count == 8
    watch = load_protocol(sources["relapse_watch"])
    weekly = next(c for c in watch.checkins if c.flow == "phq9")
    assert weekly.recurring is not None and weekly.recurring.count == 8
    maintenance = load_protocol(sources["esketamine_maintenance"])
    assert {"substance_use", "dissociation"} <= {c.flow for c in maintenance.checkins}
