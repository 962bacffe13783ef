"""Crisis detector figures: sensitivity and false alarms on the labelled corpus, and speed.

For each half of the corpus (``dev``, which the rules were written from and the
model trained on, and ``heldout``, which only measures) and each language it
prints how many dangerous messages escalate at high or critical (sensitivity)
and how many everyday messages alarm (false alarms), for the rules alone, the
model alone and the two combined as the service runs them; then the time per
message at p50/p99 on 1,600-character texts. Run:

    .venv/bin/python bench/detector.py [--misses dev] [--repeat 2000]

``--misses dev`` lists the development half's misses and false alarms (never
the held-out half's: reading those one by one would turn it into training
data).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

from flows import safety  # noqa: E402
from tests.crisis_corpus import Message, load  # noqa: E402

Judge = Callable[[str], bool]


def _rules(text: str) -> bool:
    return safety.detect_rules(text) is not None


def _model(text: str) -> bool:
    return safety.model_score(text) >= safety.MODEL_THRESHOLD


def _combined(text: str) -> bool:
    return safety.detect(text) is not None


DETECTORS: dict[str, Judge] = {"rules": _rules, "model": _model, "combined": _combined}


def rates(messages: Sequence[Message], judge: Judge) -> tuple[int, int, int, int]:
    """(positives caught, positives, negatives alarmed, negatives)."""
    pos = [m for m in messages if m.positive]
    neg = [m for m in messages if not m.positive]
    return (
        sum(judge(m.text) for m in pos),
        len(pos),
        sum(judge(m.text) for m in neg),
        len(neg),
    )


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}% ({a}/{b})" if b else "   n/a"


def report(corpus: Sequence[Message]) -> None:
    print(f"corpus: {len(corpus)} messages, {sum(m.positive for m in corpus)} positive")
    print(f"{'half':8} {'lang':4} {'detector':9} {'sensitivity':>20} {'false alarms':>20}")
    for half in ("dev", "heldout"):
        for lang in ("en", "es", "all"):
            subset = [m for m in corpus if m.half == half and (lang == "all" or m.language == lang)]
            for name, judge in DETECTORS.items():
                tp, p, fp, n = rates(subset, judge)
                print(f"{half:8} {lang:4} {name:9} {_pct(tp, p):>20} {_pct(fp, n):>20}")
    print("held-out sensitivity by category (combined):")
    held = [m for m in corpus if m.half == "heldout" and m.positive]
    for category in sorted({m.category for m in held}):
        group = [m for m in held if m.category == category]
        caught = sum(_combined(m.text) for m in group)
        print(f"  {category:20} {_pct(caught, len(group))}")


def speed(corpus: Sequence[Message], repeat: int) -> None:
    rng = random.Random(7)
    texts = []
    for _ in range(repeat):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < 1600:
            parts.append(rng.choice(corpus).text)
        texts.append(" ".join(parts)[:1600])
    timings = []
    for text in texts:
        start = time.perf_counter()
        safety.detect(text)
        timings.append(time.perf_counter() - start)
    timings.sort()
    p50 = statistics.median(timings) * 1000
    p99 = timings[int(len(timings) * 0.99) - 1] * 1000
    print(f"speed on 1,600-character texts: p50 {p50:.3f} ms, p99 {p99:.3f} ms, n={repeat}")


def misses(corpus: Sequence[Message]) -> None:
    for m in corpus:
        if m.half != "dev":
            continue
        hit = _combined(m.text)
        if m.positive and not hit:
            print(f"MISS  {m.language} {m.category}/{m.tier} {m.family}: {m.text}")
        elif not m.positive and hit:
            match = safety.detect(m.text)
            print(f"ALARM {m.language} {m.family} [{match}]: {m.text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", choices=("dev",), help="list the development half's errors")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    corpus = load()
    if args.misses:
        misses(corpus)
        return
    report(corpus)
    speed(corpus, args.repeat)


if __name__ == "__main__":
    main()
