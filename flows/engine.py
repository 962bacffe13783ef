"""The conversation engine: a pure function from (flow, state, input, now) to (state, events).

The shell (bot/) stores the state, acts on the events (send SMS, write
escalations, schedule the next flow) and feeds inputs back: patient replies,
reminder and expiry timeouts. The engine never touches the clock, the
database or the network, so a conversation can be replayed and tested.

Safety comes first: every reply is checked by ``flows.safety.detect`` before
it is read as an answer, in every state, and no flow can switch that off.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from flows import safety
from flows.conditions import Facts, holds
from flows.model import (
    AnswerSpec,
    AnswerValue,
    AskNode,
    BranchNode,
    EndNode,
    EscalateNode,
    Escalation,
    Flow,
    Next,
    SayNode,
    Score,
    ScoreFlag,
    Severity,
)
from flows.parsing import Parsed, Parser, default_hint, make_parser, retry_hint
from flows.reasons import Reason
from flows.scoring import ScoreHistory, band_for, compute_total
from flows.text import (
    CRISIS_LINE,
    PAGE_AFTER_MINUTES,
    during_clinic_hours,
    high_followup,
    pick,
    render,
)

__all__ = [
    "AnswerRecorded",
    "Context",
    "ConversationEnded",
    "ConversationState",
    "EscalationRequested",
    "Event",
    "Expired",
    "Input",
    "Outcome",
    "Purpose",
    "ReminderDue",
    "Reply",
    "ScoreComputed",
    "ScoreHistory",
    "SendMessage",
    "Severity",
    "Status",
    "Step",
    "handover",
    "handover_key",
    "resume",
    "start",
]

STATE_VERSION: Final = 1
MAX_STEPS: Final = 1000
"""Node visits plus inputs per conversation before the engine stops it (a runaway guard)."""

DEFAULT_REMINDER: Final[Mapping[str, str]] = {
    "en": "Reminder from {clinic_name}: {question}",
    "es": "Recordatorio de {clinic_name}: {question}",
}
_CARE_TEAM: Final[Mapping[str, str]] = {"en": "your care team", "es": "su equipo de atención"}
NO_VALUE: Final = "n/a"


class Status(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXPIRED = "expired"
    ENDED_BY_CRISIS = "ended_by_crisis"
    CANCELLED = "cancelled"  # texts stopped (an opt-out, a pause, a discharge)


class Purpose(StrEnum):
    QUESTION = "question"
    RETRY = "retry"
    INFO = "info"
    REMINDER = "reminder"
    CRISIS = "crisis"
    CLOSING = "closing"
    ESCALATION_REPLY = "escalation_reply"


class Outcome(StrEnum):
    COMPLETED = "completed"
    EXPIRED = "expired"
    CRISIS = "crisis"


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A text from the patient."""

    text: str


@dataclass(frozen=True, slots=True)
class ReminderDue:
    """The reminder delay passed without a reply."""


@dataclass(frozen=True, slots=True)
class Expired:
    """The check-in's expiry passed; the conversation ends with what it has."""


Input = Reply | ReminderDue | Expired


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    text: str
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class AnswerRecorded:
    """An answer; ``value`` None means unanswered after the re-asks, ``raw`` None means prefilled."""

    key: str
    raw: str | None
    value: AnswerValue | None


@dataclass(frozen=True, slots=True)
class ScoreComputed:
    name: str
    total: float
    band: str | None
    flags: tuple[str, ...]
    complete: bool
    answered: int
    items: int


@dataclass(frozen=True, slots=True)
class EscalationRequested:
    severity: Severity
    reason: str
    summary: str


@dataclass(frozen=True, slots=True)
class ConversationEnded:
    """The end; ``carry`` holds every non-null answer for a ``handover`` flow's ``prefill``."""

    outcome: Outcome
    handover: str | None
    carry: Mapping[str, AnswerValue]


Event = SendMessage | AnswerRecorded | ScoreComputed | EscalationRequested | ConversationEnded


# -- context and state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """Who the conversation is with; everything a later ``resume`` needs is kept in the state."""

    first_name: str
    language: str = "en"
    clinic_name: str = ""
    clinic_phone: str = ""
    history: Mapping[str, ScoreHistory] = field(default_factory=dict)
    prefill: Mapping[str, AnswerValue] = field(default_factory=dict)
    # what the patient is told will happen after a result (see flows.text.high_followup)
    page_after_minutes: int = PAGE_AFTER_MINUTES
    clinic_hours: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "language": self.language,
            "clinic_name": self.clinic_name,
            "clinic_phone": self.clinic_phone,
            "history": {
                name: {"totals": list(h.totals), "at": list(h.at)}
                for name, h in self.history.items()
            },
            "prefill": dict(self.prefill),
            "page_after_minutes": self.page_after_minutes,
            "clinic_hours": self.clinic_hours,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Context:
        history = {
            # states written before "at" existed have no times: every total then counts
            str(name): ScoreHistory(
                tuple(float(t) for t in h["totals"]), tuple(float(t) for t in h.get("at", ()))
            )
            for name, h in dict(data.get("history", {})).items()
        }
        return cls(
            first_name=str(data["first_name"]),
            language=str(data.get("language", "en")),
            clinic_name=str(data.get("clinic_name", "")),
            clinic_phone=str(data.get("clinic_phone", "")),
            history=history,
            prefill={str(k): _answer(v) for k, v in dict(data.get("prefill", {})).items()},
            page_after_minutes=int(data.get("page_after_minutes", PAGE_AFTER_MINUTES)),
            clinic_hours=str(data.get("clinic_hours", "")),
        )


def _answer(value: Any) -> AnswerValue:
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"not an answer value: {value!r}")


@dataclass(frozen=True, slots=True)
class ConversationState:
    """Where a conversation is; plain JSON via :meth:`to_json` / :meth:`from_json`."""

    flow: str
    node: str | None
    status: Status
    context: Context
    answers: Mapping[str, AnswerValue | None] = field(default_factory=dict)
    raw: Mapping[str, str | None] = field(default_factory=dict)
    retries: int = 0
    reminded: bool = False
    steps: int = 0
    started_at: str = ""
    updated_at: str = ""

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "flow": self.flow,
            "node": self.node,
            "status": self.status.value,
            "context": self.context.to_json(),
            "answers": dict(self.answers),
            "raw": dict(self.raw),
            "retries": self.retries,
            "reminded": self.reminded,
            "steps": self.steps,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversationState:
        """Rebuild a state; raise ``ValueError`` if ``data`` is not one this engine wrote."""
        try:
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported conversation state version {data.get('version')!r}")
            node = data["node"]
            return cls(
                flow=str(data["flow"]),
                node=None if node is None else str(node),
                status=Status(data["status"]),
                context=Context.from_json(data["context"]),
                answers={
                    str(k): None if v is None else _answer(v) for k, v in data["answers"].items()
                },
                raw={str(k): None if v is None else str(v) for k, v in data["raw"].items()},
                retries=int(data["retries"]),
                reminded=bool(data["reminded"]),
                steps=int(data["steps"]),
                started_at=str(data.get("started_at", "")),
                updated_at=str(data.get("updated_at", "")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed conversation state: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Step:
    state: ConversationState
    events: list[Event]


# -- per-flow index, built once ----------------------------------------------------------------

AnyNode = AskNode | SayNode | BranchNode | EscalateNode | EndNode


class Compiled:
    """Lookups the hot path needs, built once per Flow object and cached on it."""

    __slots__ = (
        "first",
        "flags",
        "flow_ref",
        "hints",
        "max_run",
        "nodes",
        "parsers",
        "scores",
        "specs",
    )

    def __init__(self, flow: Flow) -> None:
        self.flow_ref = weakref.ref(flow)  # weak: the cache must not keep flows alive
        self.nodes: dict[str, AnyNode] = {n.id: n for n in flow.nodes}
        self.first = flow.nodes[0].id
        self.specs: dict[str, AnswerSpec] = {}
        for node in flow.nodes:
            if isinstance(node, AskNode):
                spec = node.answer
                if isinstance(spec, str):
                    found = flow.answer_sets.get(spec)
                    if found is None:
                        raise ValueError(f"node {node.id!r} uses unknown answer set {spec!r}")
                    spec = found
                self.specs[node.id] = spec
        self.scores: dict[str, Score] = {s.name: s for s in flow.scores}
        self.flags: dict[str, ScoreFlag] = {f.name: f for s in flow.scores for f in s.flags}
        self.parsers: dict[tuple[str, str], Parser] = {}
        self.hints: dict[tuple[str, str], str] = {}
        self.max_run = 2 * len(flow.nodes) + 2

    def parser(self, node_id: str, language: str) -> Parser:
        key = (node_id, language)
        found = self.parsers.get(key)
        if found is None:
            node = self.nodes[node_id]
            affirmative = node.affirmative if isinstance(node, AskNode) else None
            found = self.parsers[key] = make_parser(self.specs[node_id], language, affirmative)
        return found

    def hint(self, node_id: str, language: str) -> str:
        key = (node_id, language)
        found = self.hints.get(key)
        if found is None:
            spec = self.specs[node_id]
            found = pick(spec.hint, language) if spec.hint else default_hint(spec, language)
            self.hints[key] = found
        return found


_COMPILED: dict[int, Compiled] = {}


def compiled(flow: Flow) -> Compiled:
    """The cached index of ``flow`` (flows are immutable, so it never goes stale).

    Kept outside the model so flows still compare equal; the entry is dropped
    when the flow is garbage-collected, before its id can be reused.
    """
    found = _COMPILED.get(id(flow))
    if found is None or found.flow_ref() is not flow:
        found = _COMPILED[id(flow)] = Compiled(flow)
        weakref.finalize(flow, _COMPILED.pop, id(flow), None)
    return found


# -- one run of the engine -------------------------------------------------------------------


class _Run:
    """Mutable working copy of a state while one input is processed."""

    __slots__ = (
        "answers",
        "c",
        "ctx",
        "events",
        "facts",
        "flow",
        "node",
        "now",
        "raw",
        "reminded",
        "retries",
        "state",
        "status",
        "steps",
    )

    def __init__(self, flow: Flow, c: Compiled, state: ConversationState, now: datetime) -> None:
        self.now = now.timestamp()
        self.flow = flow
        self.c = c
        self.state = state
        self.ctx = state.context
        self.node = state.node
        self.status = state.status
        self.answers: dict[str, AnswerValue | None] = dict(state.answers)
        self.raw: dict[str, str | None] = dict(state.raw)
        self.retries = state.retries
        self.reminded = state.reminded
        self.steps = state.steps
        self.events: list[Event] = []
        self.facts: Facts | None = None

    def finish_step(self, now: datetime) -> Step:
        stamp = now.isoformat()
        state = ConversationState(
            flow=self.state.flow,
            node=self.node,
            status=self.status,
            context=self.ctx,
            answers=self.answers,
            raw=self.raw,
            retries=self.retries,
            reminded=self.reminded,
            steps=self.steps,
            started_at=self.state.started_at or stamp,
            updated_at=stamp,
        )
        return Step(state, self.events)

    # variables and conditions

    def get_facts(self) -> Facts:
        if self.facts is None:
            self.facts = Facts(
                self.answers, self.c.scores, self.c.flags, self.ctx.history, self.now
            )
        return self.facts

    def resolve(self, name: str) -> str | None:
        ctx = self.ctx
        if name == "first_name":
            return ctx.first_name
        if name == "clinic_name":
            return ctx.clinic_name or _CARE_TEAM.get(ctx.language, _CARE_TEAM["en"])
        if name == "clinic_phone":
            return ctx.clinic_phone
        if name == "crisis_line":
            return CRISIS_LINE
        if name == "high_followup":
            return high_followup(ctx.language, ctx.page_after_minutes)
        if name == "during_clinic_hours":
            return during_clinic_hours(ctx.language, ctx.clinic_hours)
        kind, _, key = name.partition(".")
        if kind == "answer":
            return _show(self.answers.get(key))
        if kind == "score":
            total = self.get_facts().total(key)
            return NO_VALUE if total is None else _show(total.total)
        if kind == "band":
            return self.get_facts().band(key) or NO_VALUE
        return None

    def text(self, text: str | Mapping[str, str]) -> str:
        return render(pick(text, self.ctx.language), self.resolve)

    def route(self, nxt: Next | None) -> str | None:
        if nxt is None or isinstance(nxt, str):
            return nxt
        for r in nxt:
            if r.when is None or holds(r.when, self.get_facts()):
                return r.goto
        return None

    # actions

    def send(self, text: str, purpose: Purpose) -> None:
        self.events.append(SendMessage(text, purpose))

    def record(self, key: str, raw: str | None, value: AnswerValue | None) -> None:
        self.answers[key] = value
        self.raw[key] = raw
        self.facts = None
        self.retries = 0
        self.events.append(AnswerRecorded(key, raw, value))

    def escalate(self, esc: Escalation | EscalateNode) -> None:
        summary = render(esc.summary, self.resolve)
        self.events.append(EscalationRequested(esc.severity, esc.reason, summary))

    def question(self) -> str:
        node = self.c.nodes[self.node] if self.node else None
        return self.text(node.text) if isinstance(node, AskNode) else ""

    def advance(self, node_id: str | None) -> None:
        """Run nodes from ``node_id`` until one waits for a reply or the conversation ends."""
        c = self.c
        visits = 0
        while node_id is not None:
            visits += 1
            self.steps += 1
            if visits > c.max_run or self.steps > MAX_STEPS:
                self.stalled(node_id)
                return
            node = c.nodes.get(node_id)
            self.node = node_id
            if isinstance(node, AskNode):
                key = node.answer_key
                prefill = self.ctx.prefill
                if key in prefill and key not in self.answers:
                    self.record(key, None, prefill[key])
                    node_id = self.route(node.next)
                    continue
                self.retries = 0
                self.send(self.text(node.text), Purpose.QUESTION)
                return
            if isinstance(node, SayNode):
                self.send(self.text(node.text), Purpose.INFO)
                node_id = self.route(node.next)
            elif isinstance(node, BranchNode):
                node_id = self.route(node.next)
            elif isinstance(node, EscalateNode):
                self.escalate(node)
                if node.reply is not None:
                    self.send(self.text(node.reply), Purpose.ESCALATION_REPLY)
                node_id = self.route(node.next)
            elif isinstance(node, EndNode):
                if node.text is not None:
                    self.send(self.text(node.text), Purpose.CLOSING)
                self.end(Outcome.COMPLETED, node.handover)
                return
            else:
                break
        self.end(Outcome.COMPLETED, None)

    def stalled(self, node_id: str) -> None:
        flow = self.flow
        self.events.append(
            EscalationRequested(
                Severity.MODERATE,
                Reason.FLOW_STALLED,
                f"The {flow.key} check-in was stopped at node {node_id} after {self.steps} "
                "steps without finishing; the flow definition needs review.",
            )
        )
        self.end(Outcome.COMPLETED, None)

    def scores(self) -> None:
        facts = self.get_facts()
        for score in self.flow.scores:
            total = compute_total(score, self.answers)
            if total is None:
                continue
            flags = tuple(f.name for f in score.flags if holds(f.when, facts))
            self.events.append(
                ScoreComputed(
                    score.name,
                    total.total,
                    band_for(score.bands, total.total),
                    flags,
                    total.complete,
                    total.answered,
                    total.items,
                )
            )

    def end(self, outcome: Outcome, handover: str | None, *, flow_escalation: bool = True) -> None:
        flow = self.flow
        self.scores()
        if outcome is not Outcome.CRISIS:
            facts = self.get_facts()
            for rule in flow.rules:
                if holds(rule.when, facts):
                    self.escalate(rule.escalate)
        if outcome is Outcome.EXPIRED and flow_escalation and flow.expiry and flow.expiry.escalate:
            self.escalate(flow.expiry.escalate)
        self.status = {
            Outcome.COMPLETED: Status.COMPLETED,
            Outcome.EXPIRED: Status.EXPIRED,
            Outcome.CRISIS: Status.ENDED_BY_CRISIS,
        }[outcome]
        carry = {k: v for k, v in self.answers.items() if v is not None}
        self.events.append(ConversationEnded(outcome, handover, carry))

    # inputs

    def reply(self, text: str) -> None:
        match = safety.detect(text)
        if match is not None and match.tier is safety.Tier.CRITICAL:
            self.crisis(match.category)
            return
        if match is not None:
            self.concern(match.category)
        node = self.c.nodes.get(self.node) if self.node else None
        if not isinstance(node, AskNode):
            return
        language = self.ctx.language
        result = self.c.parser(node.id, language)(text)
        if isinstance(result, Parsed):
            self.record(node.answer_key, text, result.value)
            self.advance(self.route(node.next))
            return
        allowed = self.flow.retries if node.retries is None else node.retries
        if self.retries < allowed:
            self.retries += 1
            hint = retry_hint(
                self.c.specs[node.id], result.reason, language, self.c.hint(node.id, language)
            )
            self.send(hint, Purpose.RETRY)
            return
        self.record(node.answer_key, text, None)
        self.advance(node.unanswered or self.route(node.next))

    def expire(self) -> None:
        """The check-in ran out of time. Waiting on a question whose unanswered branch
        escalates (a safety question), that escalation is raised instead of the flow's own."""
        node = self.c.nodes.get(self.node) if self.node else None
        if isinstance(node, AskNode) and node.unanswered is not None:
            target = self.c.nodes.get(node.unanswered)
            if isinstance(target, EscalateNode):
                self.escalate(target)
                self.end(Outcome.EXPIRED, None, flow_escalation=False)
                return
        self.end(Outcome.EXPIRED, None)

    def crisis(self, category: str) -> None:
        ctx = self.ctx
        self.events.append(
            EscalationRequested(
                Severity.CRITICAL,
                Reason.CRISIS_LANGUAGE,
                f"Crisis language ({category}) in a reply during the {self.flow.key} "
                "check-in; the patient was sent crisis resources.",
            )
        )
        self.send(
            safety.crisis_reply(ctx.language, ctx.clinic_name, ctx.clinic_phone), Purpose.CRISIS
        )
        self.end(Outcome.CRISIS, None)

    def concern(self, category: str) -> None:
        """Softer signs in a reply: a high escalation and a call-back message; the reply is
        still read as an answer, and the conversation goes on."""
        ctx = self.ctx
        self.events.append(
            EscalationRequested(
                Severity.HIGH,
                Reason.CONCERNING_LANGUAGE,
                f"Worrying language ({category}) in a reply during the {self.flow.key} "
                "check-in; the patient was told their care team will reach out.",
            )
        )
        self.send(
            safety.reply_for(
                safety.Tier.HIGH,
                ctx.language,
                ctx.clinic_name,
                ctx.clinic_phone,
                page_after_minutes=ctx.page_after_minutes,
            ),
            Purpose.CRISIS,
        )

    def remind(self) -> None:
        if self.reminded:
            return
        question = self.question()
        if not question:
            return
        self.reminded = True
        reminder = self.flow.reminder
        template = pick(
            reminder.text if reminder and reminder.text else DEFAULT_REMINDER, self.ctx.language
        )

        def resolve(name: str) -> str | None:
            return question if name == "question" else self.resolve(name)

        self.send(render(template, resolve), Purpose.REMINDER)


def _show(value: AnswerValue | float | None) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- public entry points ---------------------------------------------------------------------


def start(flow: Flow, context: Context, now: datetime) -> Step:
    """Begin a conversation: run from the first node to the first question (or the end)."""
    c = compiled(flow)
    state = ConversationState(
        flow=flow.key,
        node=c.first,
        status=Status.ACTIVE,
        context=context,
        started_at=now.isoformat(),
    )
    run = _Run(flow, c, state, now)
    run.advance(c.first)
    return run.finish_step(now)


def resume(flow: Flow, state: ConversationState, input: Input, now: datetime) -> Step:
    """Feed one input to a conversation. An ended conversation ignores inputs (no events)."""
    if state.flow != flow.key:
        raise ValueError(f"state belongs to flow {state.flow!r}, not {flow.key!r}")
    if state.status is not Status.ACTIVE:
        return Step(state, [])
    c = compiled(flow)
    if state.node is not None and state.node not in c.nodes:
        raise ValueError(f"state points at node {state.node!r}, which flow {flow.key!r} lacks")
    run = _Run(flow, c, state, now)
    run.steps += 1
    if isinstance(input, Reply):
        run.reply(input.text)
    elif isinstance(input, ReminderDue):
        run.remind()
    elif isinstance(input, Expired):
        run.expire()
    if run.status is Status.ACTIVE and run.steps > MAX_STEPS:
        run.stalled(run.node or c.first)
    return run.finish_step(now)


def handover_key(step: Step) -> str | None:
    """The flow a completed step hands over to, if any."""
    for event in step.events:
        if isinstance(event, ConversationEnded):
            return event.handover if event.outcome is Outcome.COMPLETED else None
    return None


def handover(ended: Step, flow: Flow, now: datetime) -> Step:
    """Start ``flow`` where ``ended`` hands over (PHQ-2 → PHQ-9, item 9 → C-SSRS).

    The next flow sees the answers so far as its prefill and the scores the ended step just
    computed as history, so the simulator and production take the same path.
    """
    carry: Mapping[str, AnswerValue] = {}
    history = dict(ended.state.context.history)
    for event in ended.events:
        if isinstance(event, ConversationEnded):
            carry = event.carry
        elif isinstance(event, ScoreComputed):
            before = history.get(event.name, ScoreHistory())
            history[event.name] = before.then(event.total, now.timestamp())
    context = replace(ended.state.context, prefill=dict(carry), history=history)
    return start(flow, context, now)
