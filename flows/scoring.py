"""Score totals, bands and history references.

A score is the sum of its items' numeric answers (yes = 1, no = 0). Missing
items follow the score's ``missing`` rule: up to ``max`` may be missing, and
the total is then either the sum as is (``zero``) or the mean of the answered
items times the number of items (``prorate``, rounded to 2 decimals). More
missing items means no score at all: a partial sum must never look like a
low (good) result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flows.model import AnswerValue, Band, Score


@dataclass(frozen=True, slots=True)
class ScoreHistory:
    """Previous totals of one score for this patient, oldest first.

    ``at`` holds when each was recorded (seconds since the epoch), so that "best" can be
    the best within a window of time whatever treatments fall in it; empty when unknown,
    and then every total counts.
    """

    totals: tuple[float, ...] = ()
    at: tuple[float, ...] = ()

    @property
    def last(self) -> float | None:
        return self.totals[-1] if self.totals else None

    @property
    def baseline(self) -> float | None:
        return self.totals[0] if self.totals else None

    def best(self, now: float | None, window: float) -> float | None:
        """The lowest total recorded in the ``window`` seconds before ``now``."""
        if now is None or len(self.at) != len(self.totals):
            recent: Sequence[float] = self.totals
        else:
            recent = [t for t, at in zip(self.totals, self.at, strict=True) if now - at <= window]
        return min(recent) if recent else None

    def responded(self, ratio: float) -> bool:
        """A response shown by past totals alone: one after the baseline at or below
        ``ratio`` times it (the current total never counts: a low score today is not yet a
        response to judge a relapse from)."""
        baseline = self.baseline
        if baseline is None or baseline <= 0:
            return False
        return any(value <= baseline * ratio for value in self.totals[1:])

    def then(self, total: float, at: float) -> ScoreHistory:
        """This history with one more total, recorded at ``at``."""
        times = (*self.at, at) if len(self.at) == len(self.totals) else ()
        return ScoreHistory((*self.totals, total), times)


@dataclass(frozen=True, slots=True)
class Total:
    """A computed total and how complete it is."""

    total: float
    answered: int
    items: int

    @property
    def complete(self) -> bool:
        return self.answered == self.items


def numeric(value: AnswerValue | None) -> float | None:
    """The number an answer counts as in a score (bools are 1/0; text counts as missing)."""
    if value is None or isinstance(value, str):
        return None
    return float(value)


def compute_total(score: Score, answers: Mapping[str, AnswerValue | None]) -> Total | None:
    """The total under the score's missing rule, or ``None`` if too many items are missing."""
    values = [numeric(answers.get(key)) for key in score.items]
    present = [v for v in values if v is not None]
    items = len(values)
    missing = items - len(present)
    if missing > score.missing.max or not present:
        return None
    raw = sum(present)
    if missing and score.missing.method == "prorate":
        raw = round(raw * items / len(present), 2)
    return Total(raw, len(present), items)


def band_for(bands: Sequence[Band], total: float) -> str | None:
    """The label of the highest band whose ``min`` the total reaches (bands ascend)."""
    label: str | None = None
    for band in bands:
        if total >= band.min:
            label = band.label
        else:
            break
    return label
