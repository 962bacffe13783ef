"""Features and scoring of the crisis detector's learned model (pure, standard library only).

A message is normalized as for the lexicon (``flows.safety.normalize``), then
described by character 3- to 5-grams of each word, the words, and adjacent word
pairs within a clause. The model is multinomial logistic regression over these
counts scaled by one over the square root of their number, trained by
``bench/train_detector.py``; its weights live in ``flows/crisis_model.py``.

Long texts are scored in overlapping windows of words and the most alarming
window counts, so a dangerous sentence is not diluted by a page of ordinary
news. Per-word sums make every window cost two subtractions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Final

NGRAMS: Final = (3, 4, 5)
WINDOW: Final = 30  # words per window on long texts
STRIDE: Final = 10
CLAUSE: Final = "|"


def word_features(word: str) -> list[str]:
    padded = f" {word} "
    out = [f"w:{word}"]
    for n in NGRAMS:
        out.extend(f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1))
    return out


def pair_feature(first: str, second: str) -> str:
    return f"b:{first}_{second}"


def features(words: Sequence[str]) -> list[str]:
    """Every feature occurrence of a normalized message (training uses this)."""
    out: list[str] = []
    previous = CLAUSE
    for word in words:
        if word == CLAUSE:
            previous = CLAUSE
            continue
        out.extend(word_features(word))
        if previous != CLAUSE:
            out.append(pair_feature(previous, word))
        previous = word
    return out


Vector = tuple[float, ...]


class Scorer:
    """Scores of a message under one exported model: column 0 is a binary crisis logit, the
    rest one logit per class (the first class "none")."""

    def __init__(self, classes: Sequence[str], bias: Vector, weights: Mapping[str, Vector]) -> None:
        self.classes = tuple(classes)
        assert len(bias) == len(classes) + 1
        self.bias = bias
        self.weights = weights
        self.zero: Vector = (0.0,) * len(bias)
        self._word: Callable[[str], tuple[Vector, int]] = lru_cache(maxsize=8192)(self._sum_word)

    def _sum_word(self, word: str) -> tuple[Vector, int]:
        feats = word_features(word)
        return self._sum(feats), len(feats)

    def _sum(self, feats: Sequence[str]) -> Vector:
        total = list(self.zero)
        get = self.weights.get
        for f in feats:
            w = get(f)
            if w is not None:
                for k, x in enumerate(w):
                    total[k] += x
        return tuple(total)

    def probabilities(self, words: Sequence[str]) -> tuple[float, tuple[float, ...]]:
        """The most alarming window's crisis probability and its class probabilities."""
        # per-word contributions: the word's own features plus its pair with the previous word
        sums: list[Vector] = []
        counts: list[int] = []
        previous = CLAUSE
        for word in words:
            if word == CLAUSE:
                previous = CLAUSE
                continue
            vector, count = self._word(word)
            if previous != CLAUSE:
                pair = self.weights.get(pair_feature(previous, word))
                if pair is not None:
                    vector = tuple(a + b for a, b in zip(vector, pair, strict=True))
                count += 1
            sums.append(vector)
            counts.append(count)
            previous = word
        if not sums:
            return self._split(self.bias)
        n = len(sums)
        if n <= WINDOW + STRIDE:
            spans = [(0, n)]
        else:
            spans = [(a, min(n, a + WINDOW)) for a in range(0, n - WINDOW + STRIDE, STRIDE)]
        # prefix sums per class: each window costs one subtraction per class
        width = len(self.bias)
        prefix = [list(self.zero)]
        running = list(self.zero)
        for vector in sums:
            for k in range(width):
                running[k] += vector[k]
            prefix.append(list(running))
        counted = [0]
        for c in counts:
            counted.append(counted[-1] + c)
        best: tuple[float, tuple[float, ...]] | None = None
        for start, end in spans:
            scale = 1.0 / math.sqrt(counted[end] - counted[start])
            low, high = prefix[start], prefix[end]
            logits = tuple(self.bias[k] + (high[k] - low[k]) * scale for k in range(width))
            found = self._split(logits)
            if best is None or found[0] > best[0]:
                best = found
        assert best is not None
        return best

    def _split(self, logits: Vector) -> tuple[float, tuple[float, ...]]:
        alarm = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logits[0]))))
        return alarm, self._softmax(logits[1:])

    @staticmethod
    def _softmax(logits: Vector) -> tuple[float, ...]:
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        total = sum(exps)
        return tuple(e / total for e in exps)
