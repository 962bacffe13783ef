"""Running a flow against scripted replies, for admins, the API's simulate endpoint and tests.

Pure like the engine: the clock is the ``start`` passed in, advanced one
minute per reply, and handovers are followed through the ``resolve``
callback the caller provides (the library, or drafts being edited).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from flows import engine
from flows.engine import (
    AnswerRecorded,
    Context,
    ConversationEnded,
    EscalationRequested,
    Event,
    Input,
    Outcome,
    Reply,
    ScoreComputed,
    SendMessage,
    Step,
)
from flows.model import AnswerValue, Flow

MAX_HANDOVERS = 10
"""Flows one simulation may chain through (a guard against handover cycles)."""
REPLY_INTERVAL = timedelta(minutes=1)

Who = Literal["bot", "patient"]


@dataclass(frozen=True, slots=True)
class Line:
    who: Who
    text: str
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class FlowAnswer:
    flow: str
    key: str
    raw: str | None
    value: AnswerValue | None


@dataclass
class Transcript:
    """Everything a simulation produced, in order."""

    lines: list[Line] = field(default_factory=list)
    answers: list[FlowAnswer] = field(default_factory=list)
    scores: list[tuple[str, ScoreComputed]] = field(default_factory=list)
    escalations: list[tuple[str, EscalationRequested]] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)
    outcome: Outcome | None = None
    unused_replies: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the API."""
        return {
            "transcript": [{"who": ln.who, "text": ln.text} for ln in self.lines],
            "answers": [
                {"flow": a.flow, "key": a.key, "raw": a.raw, "value": a.value} for a in self.answers
            ],
            "scores": [
                {
                    "flow": flow,
                    "name": s.name,
                    "total": s.total,
                    "band": s.band,
                    "flags": list(s.flags),
                    "complete": s.complete,
                    "answered": s.answered,
                    "items": s.items,
                }
                for flow, s in self.scores
            ],
            "escalations": [
                {
                    "flow": flow,
                    "severity": str(e.severity),
                    "reason": e.reason,
                    "summary": e.summary,
                }
                for flow, e in self.escalations
            ],
            "flows": list(self.flows),
            "outcome": None if self.outcome is None else str(self.outcome),
            "unused_replies": self.unused_replies,
        }

    def render(self) -> str:
        """A plain-text report for terminals."""
        out = [f"{'bot' if ln.who == 'bot' else 'you'}> {ln.text}" for ln in self.lines]
        out.append("")
        out.append("Answers:")
        out += [
            f"  {a.flow}.{a.key} = {_show(a.value)}"
            + (" (prefilled)" if a.raw is None and a.value is not None else "")
            for a in self.answers
        ] or ["  (none)"]
        out.append("Scores:")
        out += [
            f"  {flow}.{s.name} = {s.total:g}"
            + (f" ({s.band})" if s.band else "")
            + (f" flags: {', '.join(s.flags)}" if s.flags else "")
            + ("" if s.complete else f" [prorated: {s.answered}/{s.items} answered]")
            for flow, s in self.scores
        ] or ["  (none)"]
        out.append("Escalations:")
        out += [f"  [{e.severity}] {e.reason}: {e.summary}" for _, e in self.escalations] or [
            "  (none)"
        ]
        outcome = "still waiting for a reply" if self.outcome is None else str(self.outcome)
        out.append(f"Outcome: {outcome}")
        if self.unused_replies:
            out.append(f"({self.unused_replies} scripted replies were not used)")
        return "\n".join(out)


def _show(value: AnswerValue | None) -> str:
    if value is None:
        return "(unanswered)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return repr(value) if isinstance(value, str) else f"{value:g}"


class Session:
    """A live simulated conversation that follows handovers; feed it inputs one by one."""

    def __init__(
        self,
        flow: Flow,
        context: Context,
        now: datetime,
        resolve: Callable[[str], Flow | None] | None = None,
    ) -> None:
        self.transcript = Transcript()
        self.context = context
        self.resolve = resolve
        self.now = now
        self.flow = flow
        self._handovers = 0
        self._take(engine.start(flow, context, now), new_flow=True)

    @property
    def active(self) -> bool:
        return self.state.active

    def send(self, item: Input) -> list[Line]:
        """Feed one input; return the transcript lines it added."""
        before = len(self.transcript.lines)
        if isinstance(item, Reply):
            self.transcript.lines.append(Line("patient", item.text))
        self.now += REPLY_INTERVAL
        self._take(engine.resume(self.flow, self.state, item, self.now))
        return self.transcript.lines[before:]

    def _take(self, step: Step, *, new_flow: bool = False) -> None:
        self.state = step.state
        if new_flow:
            self.transcript.flows.append(self.flow.key)
        for event in step.events:
            self._event(event)
        key = engine.handover_key(step)
        if key and self.resolve and self._handovers < MAX_HANDOVERS:
            nxt = self.resolve(key)
            if nxt is not None:
                self._handovers += 1
                self.flow = nxt
                self.transcript.outcome = None
                self._take(engine.handover(step, nxt, self.now), new_flow=True)

    def _event(self, event: Event) -> None:
        t = self.transcript
        key = self.flow.key
        if isinstance(event, SendMessage):
            t.lines.append(Line("bot", event.text, str(event.purpose)))
        elif isinstance(event, AnswerRecorded):
            t.answers.append(FlowAnswer(key, event.key, event.raw, event.value))
        elif isinstance(event, ScoreComputed):
            t.scores.append((key, event))
        elif isinstance(event, EscalationRequested):
            t.escalations.append((key, event))
        elif isinstance(event, ConversationEnded):
            t.outcome = event.outcome


def simulate(
    flow: Flow,
    replies: Sequence[str],
    *,
    context: Context,
    start: datetime,
    resolve: Callable[[str], Flow | None] | None = None,
) -> Transcript:
    """Run ``flow`` with ``replies`` in order; stops when the conversation (chain) ends."""
    session = Session(flow, context, start, resolve)
    for n, text in enumerate(replies):
        if not session.active:
            session.transcript.unused_replies = len(replies) - n
            break
        session.send(Reply(text))
    return session.transcript
