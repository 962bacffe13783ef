"""Engine behaviour on small hand-written flows (the library has its own golden tests)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from flows.definition import load_flow
from flows.engine import (
    AnswerRecorded,
    Context,
    ConversationEnded,
    ConversationState,
    EscalationRequested,
    Expired,
    Outcome,
    Purpose,
    ReminderDue,
    Reply,
    ScoreComputed,
    ScoreHistory,
    SendMessage,
    Status,
    Step,
    resume,
    start,
)
from flows.model import Flow, Severity

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

FREQ = """
  freq:
    type: scale
    options:
      - {value: 0, label: "Not at all", synonyms: ["never"]}
      - {value: 1, label: {en: "Several days", es: "Varios dias"}}
      - {value: 2, label: "More than half the days"}
      - {value: 3, label: "Nearly every day"}
"""

MINI_PHQ = (
    """\
key: mini_phq
title: Mini PHQ
retries: 1
reminder:
  after: 4h
expiry:
  after: 24h
  escalate: {severity: low, reason: checkin_expired, summary: "Mini PHQ expired (q1 {answer.q1})"}
answer_sets:"""
    + FREQ
    + """\
scores:
  - name: mini
    items: [q1, q2, q3]
    missing: {max: 1, method: prorate}
    bands:
      - {min: 0, label: low}
      - {min: 5, label: high}
    flags:
      - {name: q3_positive, when: {answer: q3, gt: 0}}
rules:
  - when: {flag: q3_positive}
    escalate:
      severity: high
      reason: q3_positive
      summary: "q3 = {answer.q3}, total {score.mini} ({band.mini})"
nodes:
  - id: q1
    type: ask
    text: {en: "Hi {first_name}, q1?", es: "Hola {first_name}, q1?"}
    answer: freq
    next: q2
  - id: q2
    type: ask
    text: "q2?"
    answer: freq
    next: q3
  - id: q3
    type: ask
    text: "q3?"
    answer: freq
    next:
      - when: {score: mini, gte: 5}
        goto: worried
      - goto: done
  - id: worried
    type: escalate
    severity: moderate
    reason: mini_high
    summary: "Mini total {score.mini}"
    reply: "Thanks, someone from {clinic_name} will call you."
    next: done
  - id: done
    type: end
    text: "Thank you, {first_name}."
"""
)

SCREEN = (
    """\
key: screen
title: Screen
answer_sets:"""
    + FREQ
    + """\
scores:
  - {name: screen, items: [q1]}
nodes:
  - id: q1
    type: ask
    text: "Screen q1?"
    answer: freq
    next:
      - when: {answer: q1, gte: 2}
        goto: more
      - goto: done
  - id: more
    type: end
    handover: mini_phq
  - id: done
    type: end
"""
)

KITCHEN = """\
key: kitchen
title: Kitchen sink
nodes:
  - id: hello
    type: say
    text: "Hello {first_name}."
    next: slept
  - id: slept
    type: ask
    text: "Did you sleep well?"
    answer: {type: yesno}
    next: hours
  - id: hours
    type: ask
    text: "How many hours?"
    answer: {type: integer, min: 0, max: 24, hint: "Hours from 0 to 24, please."}
    next: route
  - id: route
    type: branch
    next:
      - when: {all: [{answer: slept, eq: false}, {answer: hours, lt: 5}]}
        goto: why
      - goto: mood
  - id: why
    type: ask
    text: "What kept you up?"
    answer: {type: text, max_length: 200}
    next: mood
  - id: mood
    type: ask
    text: "Pick: 1 good, 2 okay, 3 bad, 4 to hear this again."
    answer:
      type: choice
      options:
        - {value: good, label: Good}
        - {value: okay, label: Okay, synonyms: [meh]}
        - {value: bad, label: Bad}
        - {value: again, label: Again}
    next:
      - when: {answer: mood, eq: again}
        goto: mood
      - goto: bye
  - id: bye
    type: end
    text: "Bye."
"""

TEST_FLOWS = {"mini_phq": MINI_PHQ, "screen": SCREEN, "kitchen": KITCHEN}
CTX = Context(first_name="Ana", clinic_name="Lakeside", clinic_phone="+15550100")


def flow(name: str) -> Flow:
    return load_flow(TEST_FLOWS[name])


def run(f: Flow, replies: list[str], ctx: Context = CTX) -> tuple[Step, list[object]]:
    step = start(f, ctx, NOW)
    events: list[object] = list(step.events)
    for r in replies:
        step = resume(f, step.state, Reply(r), NOW)
        events += step.events
    return step, events


def of(events: Sequence[object], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_start_sends_first_question_with_name() -> None:
    step = start(flow("mini_phq"), CTX, NOW)
    assert step.events == [SendMessage("Hi Ana, q1?", Purpose.QUESTION)]
    assert step.state.node == "q1"
    assert step.state.status is Status.ACTIVE


def test_full_conversation_scores_rules_and_ends() -> None:
    step, events = run(flow("mini_phq"), ["2", "several days", "nearly every day!!"])
    assert [(a.key, a.value) for a in of(events, AnswerRecorded)] == [
        ("q1", 2),
        ("q2", 1),
        ("q3", 3),
    ]
    assert of(events, ScoreComputed) == [
        ScoreComputed("mini", 6.0, "high", ("q3_positive",), True, 3, 3)
    ]
    escalations = of(events, EscalationRequested)
    assert escalations == [
        EscalationRequested(Severity.MODERATE, "mini_high", "Mini total 6"),
        EscalationRequested(Severity.HIGH, "q3_positive", "q3 = 3, total 6 (high)"),
    ]
    sends = of(events, SendMessage)
    assert (
        SendMessage("Thanks, someone from Lakeside will call you.", Purpose.ESCALATION_REPLY)
        in sends
    )
    assert sends[-1] == SendMessage("Thank you, Ana.", Purpose.CLOSING)
    assert events[-1] == ConversationEnded(Outcome.COMPLETED, None, {"q1": 2, "q2": 1, "q3": 3})
    assert step.state.status is Status.COMPLETED


def test_order_at_end_is_closing_scores_rules_ended() -> None:
    _, events = run(flow("mini_phq"), ["0", "0", "1"])
    kinds = [type(e).__name__ for e in events[-4:]]
    assert kinds == ["SendMessage", "ScoreComputed", "EscalationRequested", "ConversationEnded"]


def test_unparseable_reply_re_asks_with_generated_hint_then_records_none() -> None:
    f = flow("mini_phq")
    step = start(f, CTX, NOW)
    step = resume(f, step.state, Reply("7"), NOW)
    assert step.events == [SendMessage("Please reply with a number from 0 to 3.", Purpose.RETRY)]
    assert step.state.retries == 1
    step = resume(f, step.state, Reply("2 or 3"), NOW)
    assert step.events[0] == AnswerRecorded("q1", "2 or 3", None)
    assert step.events[1] == SendMessage("q2?", Purpose.QUESTION)
    assert step.state.retries == 0


def test_author_hint_and_per_node_retries() -> None:
    f = flow("kitchen")
    step, _ = run(f, ["yes"])
    step = resume(f, step.state, Reply("lots"), NOW)
    assert step.events == [SendMessage("Hours from 0 to 24, please.", Purpose.RETRY)]


def test_spanish_text_and_hint() -> None:
    f = flow("mini_phq")
    ctx = Context(first_name="Luz", language="es")
    step = start(f, ctx, NOW)
    assert step.events == [SendMessage("Hola Luz, q1?", Purpose.QUESTION)]
    step = resume(f, step.state, Reply("varios dias"), NOW)
    assert step.events[0] == AnswerRecorded("q1", "varios dias", 1)
    step = resume(f, step.state, Reply("nueve"), NOW)
    assert step.events == [
        SendMessage("Por favor responda con un número del 0 al 3.", Purpose.RETRY)
    ]


def test_reminder_sent_once_with_question() -> None:
    f = flow("mini_phq")
    step, _ = run(f, ["1"])
    step = resume(f, step.state, ReminderDue(), NOW)
    assert step.events == [SendMessage("Reminder from Lakeside: q2?", Purpose.REMINDER)]
    again = resume(f, step.state, ReminderDue(), NOW)
    assert again.events == []
    assert again.state.reminded


def test_expired_scores_with_missing_rule_and_escalates() -> None:
    f = flow("mini_phq")
    step, _ = run(f, ["1", "2"])
    step = resume(f, step.state, Expired(), NOW)
    assert step.events == [
        ScoreComputed("mini", 4.5, "low", (), False, 2, 3),
        EscalationRequested(Severity.LOW, "checkin_expired", "Mini PHQ expired (q1 1)"),
        ConversationEnded(Outcome.EXPIRED, None, {"q1": 1, "q2": 2}),
    ]
    assert step.state.status is Status.EXPIRED
    assert resume(f, step.state, Reply("3"), NOW).events == []
    assert resume(f, step.state, Expired(), NOW).events == []


def test_expired_with_too_many_missing_reports_no_score() -> None:
    f = flow("mini_phq")
    step, _ = run(f, ["1"])
    events = resume(f, step.state, Expired(), NOW).events
    assert not of(events, ScoreComputed)


def test_crisis_mid_flow_escalates_and_ends() -> None:
    f = flow("mini_phq")
    step, _ = run(f, ["1", "2"])
    step = resume(f, step.state, Reply("honestly I want to kill myself"), NOW)
    esc, msg, score, ended = step.events
    assert isinstance(esc, EscalationRequested)
    assert esc.severity is Severity.CRITICAL
    assert esc.reason == "crisis_language"
    assert "suicidal" in esc.summary and "kill" not in esc.summary
    assert isinstance(msg, SendMessage) and msg.purpose is Purpose.CRISIS
    assert "988" in msg.text
    assert score == ScoreComputed("mini", 4.5, "low", (), False, 2, 3)
    assert ended == ConversationEnded(Outcome.CRISIS, None, {"q1": 1, "q2": 2})
    assert step.state.status is Status.ENDED_BY_CRISIS
    assert "q3" not in step.state.answers


def test_late_reply_to_ended_conversation_gives_no_events() -> None:
    f = flow("mini_phq")
    step, _ = run(f, ["0", "0", "0"])
    assert step.state.status is Status.COMPLETED
    assert resume(f, step.state, Reply("I want to kill myself"), NOW).events == []


def test_handover_carries_answers_and_next_flow_skips_them() -> None:
    _, events = run(flow("screen"), ["3"])
    ended = events[-1]
    assert ended == ConversationEnded(Outcome.COMPLETED, "mini_phq", {"q1": 3})
    assert isinstance(ended, ConversationEnded)
    nxt = start(flow("mini_phq"), Context("Ana", prefill=ended.carry), NOW)
    assert nxt.events == [
        AnswerRecorded("q1", None, 3),
        SendMessage("q2?", Purpose.QUESTION),
    ]


def test_kitchen_sink_branch_text_choice_loop() -> None:
    f = flow("kitchen")
    step, events = run(f, ["nope", "four", "the neighbours", "4", "meh"])
    sends = [e.text for e in of(events, SendMessage)]
    assert sends[:2] == ["Hello Ana.", "Did you sleep well?"]
    assert sends.count("Pick: 1 good, 2 okay, 3 bad, 4 to hear this again.") == 2
    answers = {a.key: a.value for a in of(events, AnswerRecorded)}
    assert answers == {"slept": False, "hours": 4, "why": "the neighbours", "mood": "okay"}
    assert step.state.status is Status.COMPLETED


def test_state_json_round_trip_and_identical_resume() -> None:
    f = flow("mini_phq")
    ctx = Context(
        "Ana",
        language="es",
        history={"mini": ScoreHistory((9.0, 4.5), (1_700_000_000.0, 1_700_600_000.0))},
        prefill={"q9": True},
    )
    step = start(f, ctx, NOW)
    step = resume(f, step.state, Reply("1"), NOW)
    data = json.loads(json.dumps(step.state.to_json()))
    back = ConversationState.from_json(data)
    assert back == step.state
    assert resume(f, back, Reply("2"), NOW) == resume(f, step.state, Reply("2"), NOW)


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        ConversationState.from_json({"version": 1, "flow": "x"})
    with pytest.raises(ValueError):
        ConversationState.from_json({"version": 99})


def test_resume_with_other_flow_is_an_error() -> None:
    step = start(flow("mini_phq"), CTX, NOW)
    with pytest.raises(ValueError):
        resume(flow("kitchen"), step.state, Reply("1"), NOW)


def test_step_cap_stops_a_loop_the_validator_would_reject() -> None:
    looping = Flow.model_validate(
        {
            "key": "loop",
            "title": "Loop",
            "nodes": [
                {"id": "a", "type": "branch", "next": "b"},
                {"id": "b", "type": "say", "text": "hi", "next": "a"},
            ],
        }
    )
    step = start(looping, CTX, NOW)
    assert step.state.status is Status.COMPLETED
    stalled = of(step.events, EscalationRequested)
    assert stalled and stalled[0].reason == "flow_stalled"
    assert len(step.events) < 20


def test_resume_does_not_mutate_the_input_state() -> None:
    f = flow("mini_phq")
    step = start(f, CTX, NOW)
    before = step.state.to_json()
    resume(f, step.state, Reply("1"), NOW)
    assert step.state.to_json() == before
