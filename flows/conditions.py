"""Evaluating declarative conditions against answers, scores, flags and history.

Conditions are data (see docs/flows.md): no expression language, no eval. A
comparison whose subject has no value (unanswered, no score, no history) is
false, so a missing answer never triggers or suppresses a route by accident
in a way the author did not write down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.durations import duration_seconds
from flows.model import AnswerValue, Condition, Score, ScoreFlag
from flows.scoring import ScoreHistory, Total, band_for, compute_total

_NO_HISTORY = ScoreHistory()
DEFAULT_BEST_WITHIN = "12w"

RESPONSE_RATIO = 0.5
"""A response is a total at or below half the baseline (a ≥50% reduction)."""


class Facts:
    """What conditions read at one moment of a conversation; scores are computed lazily, once."""

    __slots__ = ("_flags_busy", "_totals", "answers", "flags", "history", "now", "scores")

    def __init__(
        self,
        answers: Mapping[str, AnswerValue | None],
        scores: Mapping[str, Score],
        flags: Mapping[str, ScoreFlag],
        history: Mapping[str, ScoreHistory],
        now: float | None = None,
    ) -> None:
        self.answers = answers
        self.scores = scores
        self.flags = flags
        self.history = history
        self.now = now  # seconds since the epoch: where "best" looks back from
        self._totals: dict[str, Total | None] = {}
        self._flags_busy: set[str] = set()

    def total(self, name: str) -> Total | None:
        """The current total of score ``name`` from the answers so far (None if not computable)."""
        if name in self._totals:
            return self._totals[name]
        score = self.scores.get(name)
        result = compute_total(score, self.answers) if score is not None else None
        self._totals[name] = result
        return result

    def band(self, name: str) -> str | None:
        total = self.total(name)
        score = self.scores.get(name)
        if total is None or score is None:
            return None
        return band_for(score.bands, total.total)

    def flag(self, name: str) -> bool:
        flag = self.flags.get(name)
        if flag is None or name in self._flags_busy:
            return False
        self._flags_busy.add(name)
        try:
            return holds(flag.when, self)
        finally:
            self._flags_busy.discard(name)

    def score_value(self, name: str, of: str | None) -> float | None:
        """The score (or history reference) a score condition compares."""
        hist = self.history.get(name, _NO_HISTORY)
        if of == "last":
            return hist.last
        if of == "best":
            return hist.best(self.now, self._window(name))
        if of == "baseline":
            return hist.baseline
        total = self.total(name)
        current = None if total is None else total.total
        if of is None or of == "current":
            return current
        if of == "change_since_last":
            reference = hist.last
        elif of == "change_since_best":
            reference = hist.best(self.now, self._window(name))
        else:
            reference = hist.baseline
        if current is None or reference is None:
            return None
        return current - reference

    def responded(self, name: str) -> bool:
        """A response shown by past totals: one after the baseline ≤ half the baseline."""
        return self.history.get(name, _NO_HISTORY).responded(RESPONSE_RATIO)

    def _window(self, name: str) -> float:
        score = self.scores.get(name)
        return duration_seconds(score.best_within if score is not None else DEFAULT_BEST_WITHIN)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)


def compare(value: Any, cond: Condition) -> bool:
    """Whether ``value`` satisfies every operator of ``cond`` (a missing value never does)."""
    if value is None:
        return False
    if cond.eq is not None and not _equal(value, cond.eq):
        return False
    if cond.ne is not None and _equal(value, cond.ne):
        return False
    if cond.in_ is not None and not any(_equal(value, item) for item in cond.in_):
        return False
    if cond.gt is not None and not (_is_number(value) and value > cond.gt):
        return False
    if cond.gte is not None and not (_is_number(value) and value >= cond.gte):
        return False
    if cond.lt is not None and not (_is_number(value) and value < cond.lt):
        return False
    return cond.lte is None or (_is_number(value) and value <= cond.lte)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, str) != isinstance(b, str):
        return False
    return a == b


def holds(cond: Condition, facts: Facts) -> bool:
    """Evaluate ``cond``; unknown names evaluate as "no value" (the validator rejects them)."""
    if cond.answer is not None:
        return compare(facts.answers.get(cond.answer), cond)
    if cond.score is not None:
        return compare(facts.score_value(cond.score, cond.of), cond)
    if cond.flag is not None:
        return facts.flag(cond.flag)
    if cond.answered is not None:
        return facts.answers.get(cond.answered) is not None
    if cond.responded is not None:
        return facts.responded(cond.responded)
    if cond.any_ is not None:
        return any(holds(c, facts) for c in cond.any_)
    if cond.all_ is not None:
        return all(holds(c, facts) for c in cond.all_)
    if cond.not_ is not None:
        return not holds(cond.not_, facts)
    return False
