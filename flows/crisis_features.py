"""Features and scoring of the crisis detector's learned model (pure, standard library only).

A message is normalized as for the lexicon (``flows.safety.normalize``), then
described by character 3- to 5-grams of each word, the words, adjacent word
pairs within a clause, the word classes of ``flows/crisis_concepts.py`` and the
pairs of classes that follow each other within a clause. The model is logistic
regression over these counts scaled by one over the square root of their
number (inverse document frequencies are folded into the exported weights),
trained by ``bench/train_detector.py``; its weights live in
``flows/crisis_model.py``.

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


Classes = Mapping[str, tuple[str, ...]]  # normalized word -> its concept classes


def class_features(kinds: tuple[str, ...]) -> list[str]:
    return [f"k:{k}" for k in kinds]


def class_pairs(before: tuple[str, ...], kinds: tuple[str, ...]) -> list[str]:
    return [f"kb:{a}_{b}" for a in before for b in kinds]


def features(words: Sequence[str], classes: Classes) -> list[str]:
    """Every feature occurrence of a normalized message (training uses this)."""
    out: list[str] = []
    previous = CLAUSE
    before: tuple[str, ...] = ()
    for word in words:
        if word == CLAUSE:
            previous, before = CLAUSE, ()
            continue
        out.extend(word_features(word))
        kinds = classes.get(word, ())
        out.extend(class_features(kinds))
        if previous != CLAUSE:
            out.append(pair_feature(previous, word))
        if kinds:
            out.extend(class_pairs(before, kinds))
            before = kinds
        previous = word
    return out


Vector = tuple[float, ...]


class Scorer:
    """Scores of a message under one exported model: column 0 is a binary crisis logit, the
    rest one logit per class (the first class "none")."""

    def __init__(
        self,
        classes: Sequence[str],
        bias: Vector,
        weights: Mapping[str, Vector],
        concepts: Classes,
    ) -> None:
        self.classes = tuple(classes)
        assert len(bias) == len(classes) + 1
        self.bias = bias
        self.weights = weights
        self.concepts = concepts
        self.zero: Vector = (0.0,) * len(bias)
        self._word: Callable[[str], tuple[Vector, int]] = lru_cache(maxsize=8192)(self._sum_word)
        self._kinds: Callable[[tuple[str, ...], tuple[str, ...]], tuple[Vector, int]] = lru_cache(
            maxsize=4096
        )(self._sum_kinds)

    def _sum_word(self, word: str) -> tuple[Vector, int]:
        feats = word_features(word) + class_features(self.concepts.get(word, ()))
        return self._sum(feats), len(feats)

    def _sum_kinds(self, before: tuple[str, ...], kinds: tuple[str, ...]) -> tuple[Vector, int]:
        feats = class_pairs(before, kinds)
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
        # per word: its own features, its pair with the previous word and its class pairs;
        # windows are compared on the alarm column alone (prefix sums, two subtractions per
        # window) and the class columns are summed only for the window that wins
        weights = self.weights
        spots: list[tuple[str, str, tuple[str, ...]]] = []
        alarm = [0.0]
        counted = [0]
        previous = CLAUSE
        before: tuple[str, ...] = ()
        for word in words:
            if word == CLAUSE:
                previous, before = CLAUSE, ()
                continue
            vector, count = self._word(word)
            value = vector[0]
            if previous != CLAUSE:
                pair = weights.get(pair_feature(previous, word))
                if pair is not None:
                    value += pair[0]
                count += 1
            kinds = self.concepts.get(word)
            spots.append((word, previous, before if kinds else ()))
            if kinds:
                if before:
                    extra, n = self._kinds(before, kinds)
                    value += extra[0]
                    count += n
                before = kinds
            alarm.append(alarm[-1] + value)
            counted.append(counted[-1] + count)
            previous = word
        n = len(spots)
        if not n:
            return self._split(self.bias)
        if n <= WINDOW + STRIDE:
            spans = [(0, n)]
        else:
            spans = [(a, min(n, a + WINDOW)) for a in range(0, n - WINDOW + STRIDE, STRIDE)]
        start, end = max(
            spans,
            key=lambda span: (
                (alarm[span[1]] - alarm[span[0]]) / math.sqrt(counted[span[1]] - counted[span[0]])
            ),
        )
        totals = list(self.zero)
        for word, prev, kinds_before in spots[start:end]:
            parts = [self._word(word)[0]]
            if prev != CLAUSE:
                pair = weights.get(pair_feature(prev, word))
                if pair is not None:
                    parts.append(pair)
            if kinds_before:
                parts.append(self._kinds(kinds_before, self.concepts[word])[0])
            for part in parts:
                for k, x in enumerate(part):
                    totals[k] += x
        scale = 1.0 / math.sqrt(counted[end] - counted[start])
        return self._split(tuple(b + t * scale for b, t in zip(self.bias, totals, strict=True)))

    def _split(self, logits: Vector) -> tuple[float, tuple[float, ...]]:
        alarm = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logits[0]))))
        return alarm, self._softmax(logits[1:])

    @staticmethod
    def _softmax(logits: Vector) -> tuple[float, ...]:
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        total = sum(exps)
        return tuple(e / total for e in exps)
