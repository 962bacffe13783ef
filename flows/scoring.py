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

    ``since_treatment`` is how many trailing totals were recorded after the
    latest treatment; ``None`` means the patient has no recorded treatment.
    """

    totals: tuple[float, ...] = ()
    since_treatment: int | None = None

    @property
    def last(self) -> float | None:
        return self.totals[-1] if self.totals else None

    @property
    def baseline(self) -> float | None:
        return self.totals[0] if self.totals else None

    @property
    def best(self) -> float | None:
        """Lowest total since the latest treatment (all totals if there was none)."""
        if self.since_treatment is None:
            window: Sequence[float] = self.totals
        elif self.since_treatment <= 0:
            return None
        else:
            window = self.totals[-self.since_treatment :]
        return min(window) if window else None


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
