"""Train the crisis detector's model on the corpus's development half and export it.

Logistic regression (scikit-learn, a development dependency) over the features
of ``flows/crisis_features.py``: a binary model (crisis or not: the alarm) and a
multinomial one over "none" and the crisis categories (naming what was found),
trained on the development half and the project's first corpus. Counts are
scaled by one over the square root of their number and weighted by inverse
document frequency, which is folded into the exported weights. The
regularization strength and the alarm threshold are chosen by five-fold
cross-validation on the development half alone (whole families per fold): the
strength that catches the most positives at ``--max-false-alarms``, and the
lowest crisis probability that keeps false alarms on everyday messages at or
under it. The held-out half is never read here. The weights go to
``flows/crisis_model.py`` (pure Python, read by ``flows.safety``; no download,
no run-time dependency). Run:

    .venv/bin/python bench/train_detector.py [--max-false-alarms 0.03] [--keep 16000]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import hashlib  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GroupKFold  # noqa: E402

from flows.crisis_features import features  # noqa: E402
from flows.safety import CONCEPT_INDEX, normalize  # noqa: E402
from tests.crisis_corpus import Message, load  # noqa: E402

OUT = ROOT / "flows" / "crisis_model.py"
CLASSES = (
    "none",
    "suicidal",
    "overdose",
    "self_harm",
    "harm_to_others",
    "medical_emergency",
    "psychosis_command",
)


OLD_CORPUS = ROOT / "tests" / "unit" / "data" / "crisis_corpus.yaml"


def project_corpus() -> list[Message]:
    """The project's first corpus (tests/unit/data/crisis_corpus.yaml): written next to the
    lexicon, so it only ever trains, never measures."""
    import yaml

    data = yaml.safe_load(OLD_CORPUS.read_text("utf-8"))
    out = [
        Message(f"project-{category}-{i}", text, "en", category, "critical")
        for category, texts in data["positives"].items()
        for i, text in enumerate(texts)
    ]
    out += [
        Message(f"project-none-{i}", text, "en", "none", "none")
        for i, text in enumerate(data["negatives"])
    ]
    return out


def analyzer(text: str) -> list[str]:
    return features(normalize(text).split(" "), CONCEPT_INDEX)


def scaled(x: Any, idf: Any) -> Any:
    totals = np.asarray(x.sum(axis=1)).ravel()
    totals[totals == 0] = 1
    return x.multiply(1 / np.sqrt(totals)[:, None]).multiply(idf[None, :]).tocsr()


Fitted = tuple[CountVectorizer, Any, LogisticRegression, LogisticRegression]
GRID = (0.5, 1.0, 2.0, 4.0, 8.0)


def fit(messages: list[Message], c: float, *, categories: bool = True) -> Fitted:
    """The alarm model and, for naming what was found, the category model."""
    vectorizer = CountVectorizer(analyzer=analyzer, lowercase=False)
    counts = vectorizer.fit_transform([m.text for m in messages])
    idf = TfidfTransformer(norm=None).fit(counts).idf_
    x = scaled(counts, idf)
    alarm = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    alarm.fit(x, [m.positive for m in messages])
    kind = LogisticRegression(C=c, max_iter=5000)
    if categories:
        kind.fit(x, [CLASSES.index(m.category) for m in messages])
    return vectorizer, idf, alarm, kind


def crisis_probability(fitted: Fitted, texts: list[str]) -> Any:
    vectorizer, idf, alarm, _kind = fitted
    return alarm.predict_proba(scaled(vectorizer.transform(texts), idf))[:, 1]


def cross_validated(dev: list[Message], c: float) -> Any:
    """Out-of-fold crisis probabilities on the development half, whole families per fold."""
    groups = [m.family for m in dev]
    scores = np.zeros(len(dev))
    for train, test in GroupKFold(n_splits=5).split(dev, groups=groups):
        fitted = fit([dev[i] for i in train], c, categories=False)
        scores[test] = crisis_probability(fitted, [dev[i].text for i in test])
    return scores


def at_false_alarms(
    dev: list[Message], scores: Any, max_false_alarms: float
) -> tuple[float, float, float]:
    """(threshold, sensitivity, false alarms) at the lowest threshold within the budget."""
    negatives = np.sort(scores[[not m.positive for m in dev]])
    allowed = int(len(negatives) * max_false_alarms)
    threshold = float(negatives[len(negatives) - allowed - 1]) + 1e-6
    positives = scores[[m.positive for m in dev]]
    return threshold, float(np.mean(positives >= threshold)), float(np.mean(negatives >= threshold))


def choose(dev: list[Message], max_false_alarms: float) -> tuple[float, float]:
    """The regularization strength and threshold that catch most at the false-alarm budget."""
    best: tuple[float, float, float] | None = None
    for c in GRID:
        threshold, sensitivity, false_alarms = at_false_alarms(
            dev, cross_validated(dev, c), max_false_alarms
        )
        print(
            f"cross-validated on dev, C={c}: threshold {threshold:.3f}, "
            f"sensitivity {sensitivity:.3f}, false alarms {false_alarms:.3f}"
        )
        if best is None or sensitivity > best[0]:
            best = (sensitivity, c, threshold)
    assert best is not None
    return best[1], best[2]


def export(fitted: Fitted, threshold: float, keep: int) -> None:
    vectorizer, idf, alarm, kind = fitted
    names = vectorizer.get_feature_names_out()
    # column 0: the alarm's crisis logit; then one column per class for naming the category;
    # each row times its feature's idf, so the scorer needs no idf table
    coef = np.hstack([alarm.coef_.T, kind.coef_.T]) * idf[:, None]
    norms = np.abs(coef).max(axis=1)
    order = np.argsort(-norms)[:keep]
    digest = hashlib.sha256()
    lines = []
    for i in sorted(order, key=lambda i: names[i]):
        weights = ", ".join(f"{w:.4f}" for w in coef[i])
        lines.append(f"    {names[i]!r}: ({weights}),\n")
        digest.update(lines[-1].encode())
    bias = ", ".join(f"{b:.4f}" for b in (*alarm.intercept_, *kind.intercept_))
    OUT.write_text(
        '"""The crisis detector\'s learned weights: generated by bench/train_detector.py, do not\n'
        "edit. Over flows/crisis_features.py features: column 0 is the binary alarm's crisis\n"
        'logit, the others a multinomial model over CLASSES that names the category."""\n\n'
        "# fmt: off\n"
        f"VERSION = {digest.hexdigest()[:12]!r}\n"
        f"CLASSES = {CLASSES!r}\n"
        f"THRESHOLD = {threshold:.4f}\n"
        f"BIAS = ({bias})\n"
        "WEIGHTS: dict[str, tuple[float, ...]] = {\n" + "".join(lines) + "}\n",
        "utf-8",
    )
    print(f"wrote {OUT.relative_to(ROOT)}: {len(lines)} features, {OUT.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-false-alarms", type=float, default=0.03)
    parser.add_argument("--keep", type=int, default=16000)
    args = parser.parse_args()
    corpus = load()
    dev = [m for m in corpus if m.half == "dev"] + project_corpus()
    c, threshold = choose(dev, args.max_false_alarms)
    print(f"chosen: C={c}, threshold {threshold:.3f}")
    export(fit(dev, c), threshold, args.keep)


if __name__ == "__main__":
    main()
