"""Conditions: comparisons, combinators, flags and history references."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flows.conditions import Facts, holds
from flows.model import Condition, Score
from flows.scoring import ScoreHistory

SCORE = Score.model_validate(
    {
        "name": "phq",
        "items": ["q1", "q2"],
        "missing": {"max": 1, "method": "prorate"},
        "bands": [{"min": 0, "label": "low"}, {"min": 4, "label": "high"}],
        "flags": [{"name": "q2_pos", "when": {"answer": "q2", "gt": 0}}],
    }
)


NOW = 1_800_000_000.0
WEEK = 7 * 24 * 3600.0


def facts(answers: dict[str, Any], history: dict[str, ScoreHistory] | None = None) -> Facts:
    flags = {f.name: f for f in SCORE.flags}
    return Facts(answers, {"phq": SCORE}, flags, history or {}, NOW)


def weeks_ago(*points: tuple[float, float]) -> ScoreHistory:
    """(total, weeks before NOW) pairs, oldest first."""
    return ScoreHistory(tuple(t for t, _ in points), tuple(NOW - w * WEEK for _, w in points))


def check(cond: dict[str, Any], answers: dict[str, Any], **hist: ScoreHistory) -> bool:
    return holds(Condition.model_validate(cond), facts(answers, hist))


@pytest.mark.parametrize(
    ("cond", "answers", "expected"),
    [
        ({"answer": "q1", "gt": 0}, {"q1": 1}, True),
        ({"answer": "q1", "gt": 0}, {"q1": 0}, False),
        ({"answer": "q1", "gte": 1, "lt": 3}, {"q1": 2}, True),
        ({"answer": "q1", "gte": 1, "lt": 3}, {"q1": 3}, False),
        ({"answer": "q1", "eq": 2}, {"q1": 2}, True),
        ({"answer": "q1", "ne": 2}, {"q1": 1}, True),
        ({"answer": "q1", "ne": 2}, {}, False),
        ({"answer": "q1", "in": [1, 3]}, {"q1": 3}, True),
        ({"answer": "q1", "eq": "2"}, {"q1": 2}, False),
        ({"answer": "q1", "gt": 0}, {"q1": "text"}, False),
        ({"answer": "q1", "eq": True}, {"q1": True}, True),
        ({"answer": "q1", "gt": 0}, {"q1": None}, False),
        ({"answered": "q1"}, {"q1": 0}, True),
        ({"answered": "q1"}, {"q1": None}, False),
        ({"not": {"answered": "q1"}}, {}, True),
        ({"any": [{"answer": "q1", "eq": 1}, {"answer": "q2", "eq": 1}]}, {"q2": 1}, True),
        ({"all": [{"answer": "q1", "eq": 1}, {"answer": "q2", "eq": 1}]}, {"q2": 1}, False),
        ({"score": "phq", "gte": 4}, {"q1": 2, "q2": 2}, True),
        ({"score": "phq", "gte": 4}, {"q1": 2}, True),  # prorated: 2 * 2 / 1
        ({"score": "phq", "gte": 0}, {}, False),  # no score at all
        ({"flag": "q2_pos"}, {"q2": 1}, True),
        ({"flag": "q2_pos"}, {"q2": 0}, False),
        ({"flag": "nope"}, {"q2": 1}, False),
    ],
)
def test_conditions(cond: dict[str, Any], answers: dict[str, Any], expected: bool) -> None:
    assert check(cond, answers) is expected


# 8 is older than the 12-week window; the best inside it is 6
HIST = weeks_ago((20.0, 30), (8.0, 13), (12.0, 2), (6.0, 1))


@pytest.mark.parametrize(
    ("of", "op", "expected"),
    [
        ("last", {"eq": 6}, True),
        ("baseline", {"eq": 20}, True),
        ("best", {"eq": 6}, True),  # within 12 weeks: (12, 6)
        ("current", {"eq": 4}, True),
        ("change_since_last", {"eq": -2}, True),
        ("change_since_best", {"eq": -2}, True),
        ("change_since_baseline", {"eq": -16}, True),
    ],
)
def test_history_references(of: str, op: dict[str, Any], expected: bool) -> None:
    cond = {"score": "phq", "of": of, **op}
    assert check(cond, {"q1": 2, "q2": 2}, phq=HIST) is expected


def test_best_looks_back_over_its_window_and_older_states_count_every_total() -> None:
    window = 12 * WEEK
    assert weeks_ago((5.0, 20), (3.0, 13), (9.0, 1)).best(NOW, window) == 9.0
    assert weeks_ago((5.0, 20), (3.0, 12), (9.0, 1)).best(NOW, window) == 3.0
    assert weeks_ago((3.0, 13)).best(NOW, window) is None
    assert ScoreHistory((5.0, 3.0, 9.0)).best(NOW, window) == 3.0  # no times recorded
    assert check({"score": "phq", "of": "last", "gte": 0}, {}) is False  # no history
    # the window is the score's own
    short = SCORE.model_copy(update={"best_within": "2w"})
    found = Facts({"q1": 2, "q2": 2}, {"phq": short}, {}, {"phq": HIST}, NOW)
    assert found.score_value("phq", "best") == 6.0
    assert (
        Facts({}, {"phq": short}, {}, {"phq": weeks_ago((1.0, 3))}, NOW).score_value("phq", "best")
        is None
    )


def test_responded_means_a_past_total_at_or_below_half_the_baseline() -> None:
    answers = {"q1": 2, "q2": 2}  # current total 4
    # today's low total is not yet a response: past scores only
    assert not check({"responded": "phq"}, answers, phq=ScoreHistory((8.0,)))
    assert check({"responded": "phq"}, {}, phq=ScoreHistory((10.0, 5.0)))
    assert check({"responded": "phq"}, {}, phq=ScoreHistory((24.0, 11.0, 14.0)))
    assert not check({"responded": "phq"}, {}, phq=ScoreHistory((10.0,)))
    assert not check({"responded": "phq"}, {}, phq=ScoreHistory((16.0, 11.0)))
    assert not check({"responded": "phq"}, answers)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"answer": "q1"},
        {"answer": "q1", "score": "phq", "gt": 1},
        {"flag": "x", "gt": 1},
        {"answer": "q1", "of": "last", "gt": 1},
        {"answer": "q1", "gt": "big"},
        {"any": []},
        {"answer": "q1", "eq": 1, "extra": 2},
    ],
)
def test_malformed_conditions_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Condition.model_validate(bad)
