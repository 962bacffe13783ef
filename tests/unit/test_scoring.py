"""Score totals under missing rules, bands and the events the engine reports."""

from __future__ import annotations

from typing import Any

from flows.model import Band, Score
from flows.scoring import band_for, compute_total, numeric


def score(**kw: Any) -> Score:
    return Score.model_validate({"name": "s", "items": ["a", "b", "c", "d"], **kw})


def test_complete_sum() -> None:
    total = compute_total(score(), {"a": 1, "b": 2, "c": 3, "d": 0})
    assert total is not None
    assert (total.total, total.answered, total.items, total.complete) == (6.0, 4, 4, True)


def test_default_rule_needs_every_item() -> None:
    assert compute_total(score(), {"a": 1, "b": 2, "c": 3}) is None
    assert compute_total(score(), {"a": 1, "b": 2, "c": 3, "d": None}) is None


def test_prorate_and_zero() -> None:
    prorated = compute_total(
        score(missing={"max": 1, "method": "prorate"}), {"a": 1, "b": 1, "c": 2}
    )
    assert prorated is not None and prorated.total == 5.33 and not prorated.complete
    zeroed = compute_total(score(missing={"max": 2, "method": "zero"}), {"a": 1, "b": 1})
    assert zeroed is not None and zeroed.total == 2.0
    assert compute_total(score(missing={"max": 1, "method": "prorate"}), {"a": 1, "b": 1}) is None


def test_yes_no_and_text_values() -> None:
    assert numeric(True) == 1.0 and numeric(False) == 0.0
    assert numeric("words") is None and numeric(None) is None
    total = compute_total(score(missing={"max": 1}), {"a": True, "b": False, "c": True, "d": "x"})
    assert total is not None and total.total == 2.0


def test_bands() -> None:
    bands = [
        Band(min=0, label="minimal"),
        Band(min=5, label="mild"),
        Band(min=10, label="moderate"),
    ]
    assert band_for(bands, 0) == "minimal"
    assert band_for(bands, 4.99) == "minimal"
    assert band_for(bands, 5) == "mild"
    assert band_for(bands, 27) == "moderate"
    assert band_for(bands, -1) is None
    assert band_for([], 3) is None
