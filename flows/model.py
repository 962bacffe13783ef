"""Pydantic models of a flow definition: the shape ``docs/flows.md`` describes.

The models check structure and types only (every error keeps the path the
loader maps to a line and column); cross-references (node targets, answer
sets, scores in conditions, template variables) are checked in
``flows.validate`` because they need the whole flow.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    model_validator,
)

from flows.durations import DURATION_PATTERN, parse_duration

ID_PATTERN = r"^[a-z][a-z0-9_]*$"
LANG_PATTERN = r"^[a-z]{2,3}$"
MAX_TEXT = 2000

AnswerValue = bool | int | float | str
"""A recorded answer: a scale/integer number, a choice value, yes/no, or free text."""

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=64)]
LangCode = Annotated[str, StringConstraints(pattern=LANG_PATTERN)]
Number = int | float
Scalar = bool | int | float | str


class Severity(StrEnum):
    """How urgently a clinician must look at an escalation (most urgent first)."""

    CRITICAL = "critical"
    HIGH = "high"
    MODERATE = "moderate"
    LOW = "low"


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN.replace("(?=\\d)", "")),
    AfterValidator(_check_duration),
]


def _need_en(value: dict[str, str]) -> dict[str, str]:
    if "en" not in value:
        raise ValueError("a text map needs an 'en' entry (the fallback language)")
    return value


def _kind(value: Any, kinds: dict[type, str]) -> str | None:
    for typ, tag in kinds.items():
        if isinstance(value, typ):
            return tag
    return None


PlainText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
TextMap = Annotated[dict[LangCode, PlainText], AfterValidator(_need_en)]
Text = Annotated[
    Annotated[PlainText, Tag("plain")] | Annotated[TextMap, Tag("by_language")],
    Discriminator(
        lambda v: _kind(v, {str: "plain", dict: "by_language"}),
        custom_error_type="text_type",
        custom_error_message="expected a text: a string or a map of language code to string",
    ),
]
"""A message: one string in the flow's language, or ``{en: ..., es: ...}``."""

Synonyms = Annotated[
    Annotated[list[PlainText], Tag("list")]
    | Annotated[dict[LangCode, list[PlainText]], Tag("by_language")],
    Discriminator(
        lambda v: _kind(v, {list: "list", dict: "by_language"}),
        custom_error_type="synonyms_type",
        custom_error_message="expected a list of strings or a map of language code to list",
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(_Model):
    """A declarative test on answers, scores, flags or history (see docs/flows.md)."""

    answer: Id | None = None
    score: Id | None = None
    of: (
        Literal[
            "current",
            "last",
            "best",
            "baseline",
            "change_since_last",
            "change_since_best",
            "change_since_baseline",
        ]
        | None
    ) = None
    flag: Id | None = None
    answered: Id | None = None
    responded: Id | None = None
    any_: list[Condition] | None = Field(default=None, alias="any", min_length=1)
    all_: list[Condition] | None = Field(default=None, alias="all", min_length=1)
    not_: Condition | None = Field(default=None, alias="not")
    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)

    @model_validator(mode="after")
    def _one_subject(self) -> Condition:
        subjects = [
            name
            for name, attr in (
                ("answer", "answer"),
                ("score", "score"),
                ("flag", "flag"),
                ("answered", "answered"),
                ("responded", "responded"),
                ("any", "any_"),
                ("all", "all_"),
                ("not", "not_"),
            )
            if getattr(self, attr) is not None
        ]
        if len(subjects) != 1:
            found = ", ".join(subjects) or "none"
            raise ValueError(
                "a condition needs exactly one of answer, score, flag, answered, responded, "
                f"any, all, not (found: {found})"
            )
        ops = self.operators()
        if subjects[0] in ("answer", "score"):
            if not ops:
                raise ValueError(
                    f"a condition on {subjects[0]} needs an operator: eq, ne, gt, gte, lt, lte or in"
                )
        elif ops:
            raise ValueError(f"operators ({', '.join(ops)}) only apply to answer or score")
        if self.of is not None and self.score is None:
            raise ValueError("'of' only applies to a score condition")
        return self

    def operators(self) -> dict[str, Any]:
        """The comparison operators set on this condition, by name."""
        out: dict[str, Any] = {}
        for name in ("eq", "ne", "gt", "gte", "lt", "lte"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.in_ is not None:
            out["in"] = self.in_
        return out


class Escalation(_Model):
    """A request for a clinician to look at this patient."""

    severity: Severity
    reason: Id
    summary: PlainText


class Route(_Model):
    """One entry of a route list: go to ``goto`` when ``when`` holds (or always, if absent)."""

    when: Condition | None = None
    goto: Id


Next = Annotated[
    Annotated[Id, Tag("id")] | Annotated[list[Route], Field(min_length=1), Tag("routes")],
    Discriminator(
        lambda v: _kind(v, {str: "id", list: "routes"}),
        custom_error_type="next_type",
        custom_error_message="expected a node id or a list of routes ({when, goto})",
    ),
]


class ScaleOption(_Model):
    value: int
    label: Text
    synonyms: Synonyms = Field(default_factory=list)


class ChoiceOption(_Model):
    value: Annotated[int, Tag("int")] | Annotated[Id, Tag("str")] = Field(
        discriminator=Discriminator(lambda v: _kind(v, {int: "int", str: "str"}))
    )
    label: Text
    synonyms: Synonyms = Field(default_factory=list)


class _Spec(_Model):
    hint: Text | None = None


class ScaleSpec(_Spec):
    """Numbered options with labels (PHQ/GAD items); the value is the option's number."""

    type: Literal["scale"]
    options: list[ScaleOption] = Field(min_length=2, max_length=20)


class ChoiceSpec(_Spec):
    """Options picked by position, numeric value, label or synonym."""

    type: Literal["choice"]
    options: list[ChoiceOption] = Field(min_length=2, max_length=20)


class IntegerSpec(_Spec):
    """A whole number in ``[min, max]``."""

    type: Literal["integer"]
    min: int = Field(ge=-1_000_000, le=1_000_000)
    max: int = Field(ge=-1_000_000, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> IntegerSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class YesNoSynonyms(_Model):
    yes: Synonyms = Field(default_factory=list)
    no: Synonyms = Field(default_factory=list)


class YesNoSpec(_Spec):
    """Yes (``true``, counts 1 in scores) or no (``false``, counts 0)."""

    type: Literal["yesno"]
    synonyms: YesNoSynonyms = Field(default_factory=YesNoSynonyms)


class TextSpec(_Spec):
    """Free text, kept as written (stripped)."""

    type: Literal["text"]
    max_length: int = Field(default=1000, ge=1, le=1600)


AnswerSpec = Annotated[
    ScaleSpec | ChoiceSpec | IntegerSpec | YesNoSpec | TextSpec, Field(discriminator="type")
]
AnswerRef = Annotated[
    Annotated[Id, Tag("name")] | Annotated[AnswerSpec, Tag("spec")],
    Discriminator(
        lambda v: _kind(v, {str: "name", dict: "spec"}),
        custom_error_type="answer_type",
        custom_error_message="expected the name of an answer set or an answer spec mapping",
    ),
]


class AskNode(_Model):
    """Sends a question and waits for the reply."""

    id: Id
    type: Literal["ask"]
    text: Text
    answer: AnswerRef
    key: Id | None = None
    retries: int | None = Field(default=None, ge=0, le=5)
    # A safety question is never read as "no" when unanswered: after the re-asks (or when the
    # check-in expires on it) the flow goes to ``unanswered``, an escalate node.
    safety: bool = False
    unanswered: Id | None = None
    # On a scale: the option a bare "yes" means ("yes" to PHQ-9 item 9 is positive).
    affirmative: int | None = None
    next: Next

    @property
    def answer_key(self) -> str:
        """The key the answer is recorded under (``key``, else the node id)."""
        return self.key or self.id


class SayNode(_Model):
    """Sends a message and moves on without waiting."""

    id: Id
    type: Literal["say"]
    text: Text
    next: Next


class BranchNode(_Model):
    """Routes on conditions without sending anything."""

    id: Id
    type: Literal["branch"]
    next: Next


class EscalateNode(_Model):
    """Requests an escalation, optionally tells the patient, then moves on or ends."""

    id: Id
    type: Literal["escalate"]
    severity: Severity
    reason: Id
    summary: PlainText
    reply: Text | None = None
    next: Next | None = None


class EndNode(_Model):
    """Ends the conversation as completed, optionally handing over to another flow."""

    id: Id
    type: Literal["end"]
    text: Text | None = None
    handover: Id | None = None


Node = Annotated[
    AskNode | SayNode | BranchNode | EscalateNode | EndNode, Field(discriminator="type")
]


class Missing(_Model):
    """How many items may be unanswered and how the total is then computed."""

    max: int = Field(default=0, ge=0)
    method: Literal["prorate", "zero"] = "zero"


class Band(_Model):
    min: Number
    label: PlainText


class ScoreFlag(_Model):
    name: Id
    when: Condition


class Score(_Model):
    """A sum of numeric answers with bands and flags (PHQ-9, GAD-7, ...)."""

    name: Id
    title: str | None = None
    items: list[Id] = Field(min_length=1, max_length=100)
    missing: Missing = Field(default_factory=Missing)
    bands: list[Band] = Field(default_factory=list)
    flags: list[ScoreFlag] = Field(default_factory=list)
    # how far back "best" looks (conditions `of: best` and `of: change_since_best`)
    best_within: Duration = "12w"


class Rule(_Model):
    """An escalation raised when the conversation ends and ``when`` holds."""

    when: Condition
    escalate: Escalation


class Reminder(_Model):
    after: Duration
    text: Text | None = None


class Expiry(_Model):
    after: Duration
    escalate: Escalation | None = None


class Flow(_Model):
    """One check-in conversation: the root of a flow YAML file."""

    key: Id
    title: PlainText
    description: str = ""
    language: LangCode = "en"
    validated: bool = False
    retries: int = Field(default=2, ge=0, le=5)
    reminder: Reminder | None = None
    expiry: Expiry | None = None
    answer_sets: dict[Id, AnswerSpec] = Field(default_factory=dict)
    scores: list[Score] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    nodes: list[Node] = Field(min_length=1, max_length=500)


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file, as shipped in ``flows/schema/flow.schema.json``."""
    schema = Flow.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://aftercare.invalid/schema/flow.schema.json",
        **schema,
    }


def flow_schema_text() -> str:
    """The schema as shipped: stable formatting, so a test can compare it byte for byte."""
    return json.dumps(flow_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
