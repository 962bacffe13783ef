"""The learned model's pure-Python scorer reads exactly the features it was trained on."""

from __future__ import annotations

import math

import pytest

from flows import crisis_model
from flows.crisis_features import WINDOW, Scorer, features
from flows.safety import CONCEPT_INDEX, model_probabilities, normalize


def _logit(text: str) -> float:
    """Column 0 as training computes it: the feature counts of the whole message, scaled
    by one over the square root of their number."""
    feats = features([w for w in normalize(text).split(" ") if w], CONCEPT_INDEX)
    total = sum(crisis_model.WEIGHTS.get(f, (0.0,))[0] for f in feats)
    return crisis_model.BIAS[0] + total / math.sqrt(len(feats))


@pytest.mark.parametrize(
    "text",
    [
        "i just want to go to sleep and never wake up",
        "no quiero despertar mañana, ya no puedo mas | perdon",
        "took my meds this morning, feeling ok, headache is gone",
        "bp 150/90 at the pharmacy, nurse said its fine",
    ],
)
def test_the_scorer_matches_the_training_features_on_a_short_message(text: str) -> None:
    alarm, classes = model_probabilities(text)
    assert alarm == pytest.approx(1 / (1 + math.exp(-_logit(text))), rel=1e-9)
    assert sum(classes.values()) == pytest.approx(1.0)


def test_concept_classes_reach_words_the_training_text_never_had() -> None:
    """Two words of one class give the same class features, whatever their spelling."""
    a = features(normalize("i bought a rope").split(" "), CONCEPT_INDEX)
    b = features(normalize("i bought a noose").split(" "), CONCEPT_INDEX)
    assert "k:MEANS" in a and "k:MEANS" in b
    assert {f for f in a if f.startswith("kb:")} == {f for f in b if f.startswith("kb:")}


def test_a_clause_break_stops_word_and_class_pairs() -> None:
    feats = features(["i", "|", "kil"], CONCEPT_INDEX)
    assert not any(f.startswith(("b:", "kb:")) for f in feats)


def test_a_long_message_is_scored_by_its_most_alarming_window() -> None:
    danger = "i have the pills saved up and tonight i am taking all of them"
    filler = " ".join(["the kids had soccer and then we went to the store for groceries"] * 12)
    scorer = Scorer(crisis_model.CLASSES, crisis_model.BIAS, crisis_model.WEIGHTS, CONCEPT_INDEX)
    words = [w for w in normalize(f"{filler} {danger} {filler}").split(" ") if w]
    assert len(words) > 3 * WINDOW
    alone = scorer.probabilities([w for w in normalize(danger).split(" ") if w])[0]
    diluted = _logit(f"{filler} {danger} {filler}")
    assert scorer.probabilities(words)[0] > 1 / (1 + math.exp(-diluted))
    assert scorer.probabilities(words)[0] == pytest.approx(alone, abs=0.35)
