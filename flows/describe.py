"""What a recorded answer means, in words a clinician reads at a glance.

An answer is stored as a value ("1", true); the page shows the question it
answered and the value with its label ("1 — Several days"), taken from the
exact flow version the patient was asked, so a later wording change never
relabels an old answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.model import (
    AnswerSpec,
    AnswerValue,
    AskNode,
    ChoiceSpec,
    Flow,
    ScaleSpec,
    YesNoSpec,
)
from flows.text import pick


@dataclass(frozen=True, slots=True)
class Question:
    key: str
    text: str  # the question as written in the flow (before template variables)
    spec: AnswerSpec | None
    safety: bool


def questions(flow: Flow, language: str = "en") -> dict[str, Question]:
    """Every question of ``flow`` by the key its answer is recorded under."""
    out: dict[str, Question] = {}
    for node in flow.nodes:
        if not isinstance(node, AskNode):
            continue
        spec = node.answer if not isinstance(node.answer, str) else None
        if spec is None:
            spec = flow.answer_sets.get(str(node.answer))
        out.setdefault(
            node.answer_key,
            Question(node.answer_key, short(pick(node.text, language)), spec, node.safety),
        )
    return out


def short(text: str) -> str:
    """A question without the answer options SMS spells out after it: "2/9 Feeling down,
    depressed, or hopeless? 0 Not at all, 1 ..." reads "2/9 Feeling down, depressed, or
    hopeless?"."""
    end = text.find("?")
    return text[: end + 1] if 0 < end < len(text) - 1 else text


def reading(spec: AnswerSpec | None, value: AnswerValue | None, language: str = "en") -> str:
    """``1 — Several days``, ``yes``, ``7``; "unanswered" for a question left without one."""
    if value is None:
        return "unanswered"
    if isinstance(spec, YesNoSpec) or isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(spec, ScaleSpec | ChoiceSpec):
        for option in spec.options:
            if option.value == value:
                return f"{value} — {pick(option.label, language)}"
    return str(value)
