"""Answer reading on held-out replies: how often a reply is read as a careful nurse would.

The replies in ``tests/data/answers/heldout.yaml`` were written, with the
reading a nurse would record, by an author who had not seen the parser. Each
is parsed as the shipped library parses yes/no questions (the C-SSRS answer
set) and frequency items (the PHQ-9 answer set), in the reply's language.
Prints agreement per question type and language, how many dangerous
misreadings there were (a "yes" read as "no", an option read as a lower one),
and lists the disagreements with ``--list``. Run:

    .venv/bin/python bench/parsing.py [--list]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
from collections import Counter  # noqa: E402

import yaml  # noqa: E402

from bot.library import flow_sources  # noqa: E402
from flows.definition import load_flow  # noqa: E402
from flows.parsing import Parsed, Parser, make_parser  # noqa: E402

HELDOUT = ROOT / "tests" / "data" / "answers" / "heldout.yaml"


def parsers() -> dict[tuple[str, str], Parser]:
    cssrs = load_flow(flow_sources()["cssrs_screen"])
    phq9 = load_flow(flow_sources()["phq9"])
    yesno, frequency = cssrs.answer_sets["yes_no"], phq9.answer_sets["frequency"]
    return {
        (kind, lang): make_parser(spec, lang)
        for kind, spec in (("yesno", yesno), ("frequency", frequency))
        for lang in ("en", "es")
    }


def reading(parser: Parser, text: str) -> str:
    result = parser(text)
    if not isinstance(result, Parsed):
        return "reask"
    if isinstance(result.value, bool):
        return "yes" if result.value else "no"
    return str(result.value)


def dangerous(expect: str, got: str) -> bool:
    """A reading that would hide risk: yes read as no, an option read as a lower one."""
    if expect == "yes":
        return got == "no"
    if expect.isdigit() and got.isdigit():
        return int(got) < int(expect)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the disagreements")
    args = parser.parse_args()
    items = yaml.safe_load(HELDOUT.read_text("utf-8"))["items"]
    table = parsers()
    agree: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    danger = 0
    for item in items:
        key = (str(item["question"]), str(item["language"]))
        expect = str(item["expect"])
        got = reading(table[key], str(item["text"]))
        total[key] += 1
        agree[key] += got == expect
        danger += dangerous(expect, got)
        if args.list and got != expect:
            print(f"{key[0]:9} {key[1]} expect {expect:5} got {got:5} {item['text']}")
    print(f"held-out replies: {sum(total.values())}")
    for key in sorted(total):
        print(f"  {key[0]:9} {key[1]}  {agree[key]}/{total[key]} = {agree[key] / total[key]:.1%}")
    overall = sum(agree.values()) / sum(total.values())
    print(f"  all           {sum(agree.values())}/{sum(total.values())} = {overall:.1%}")
    print(f"dangerous misreadings (yes read as no, an option read as a lower one): {danger}")


if __name__ == "__main__":
    main()
