"""Golden transcripts for the shipped clinical library (flows/library/*.yaml).

Every flow is driven through every branch and every escalation with the real
engine, and each transcript is compared in full: the trace of events (messages
by purpose, answers, scores, escalations, the end), the exact escalations and
scores, the hand-over target and, for one flow of each kind, every message text.

Trace tokens: a message is its purpose (``question``, ``retry``, ``info``,
``reminder``, ``crisis``, ``closing``, ``escalation_reply``); an answer is
``key=value`` (``yes``/``no`` for booleans, ``null`` when unanswered); a score
is ``score:name=total/band``; an escalation is ``severity:reason``; the end is
``end:outcome`` plus ``>flow`` for a hand-over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flows.definition import load_flow, validate_flow_source
from flows.engine import (
    AnswerRecorded,
    Context,
    ConversationEnded,
    EscalationRequested,
    Event,
    Expired,
    ReminderDue,
    Reply,
    ScoreComputed,
    ScoreHistory,
    SendMessage,
    resume,
    start,
)
from flows.gsm import gsm7_length, non_gsm7_chars
from flows.model import AskNode, EndNode, EscalateNode, Flow, SayNode
from flows.simulator import Transcript as SimTranscript
from flows.simulator import simulate
from flows.text import variants

LIBRARY = Path(__file__).resolve().parents[2] / "flows" / "library"
KEYS = sorted(p.stem for p in LIBRARY.glob("*.yaml"))
EXPECTED_KEYS = [
    "alcohol_sedatives",
    "bladder_screen",
    "cssrs_screen",
    "daily_mood",
    "dissociation",
    "gad2",
    "gad7",
    "mania_screen",
    "phq2",
    "phq9",
    "post_session",
    "psychosis_screen",
    "substance_use",
]
SPANISH_REQUIRED = ["phq2", "phq9", "gad2", "gad7", "daily_mood"]
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ANA = Context(first_name="Ana", clinic_name="Lakeside Clinic", clinic_phone="555-0100")
CRISIS = "I want to kill myself"


@cache
def source(key: str) -> str:
    return (LIBRARY / f"{key}.yaml").read_text("utf-8")


@cache
def flow(key: str) -> Flow:
    return load_flow(source(key))


# -- driving a conversation ------------------------------------------------------------------

Input = str | ReminderDue | Expired


@dataclass
class Transcript:
    events: list[Event]

    @property
    def trace(self) -> list[str]:
        return [_token(e) for e in self.events]

    @property
    def messages(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, SendMessage)]

    @property
    def escalations(self) -> list[tuple[str, str]]:
        return [
            (str(e.severity), e.reason) for e in self.events if isinstance(e, EscalationRequested)
        ]

    @property
    def summaries(self) -> dict[str, str]:
        return {e.reason: e.summary for e in self.events if isinstance(e, EscalationRequested)}

    @property
    def scores(self) -> dict[str, ScoreComputed]:
        return {e.name: e for e in self.events if isinstance(e, ScoreComputed)}

    @property
    def answers(self) -> dict[str, object]:
        return {e.key: e.value for e in self.events if isinstance(e, AnswerRecorded)}

    @property
    def end(self) -> ConversationEnded:
        ends = [e for e in self.events if isinstance(e, ConversationEnded)]
        assert len(ends) == 1, f"expected exactly one end, got {ends}"
        assert self.events[-1] is ends[0], "the end must be the last event"
        return ends[0]


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _token(e: Event) -> str:
    if isinstance(e, SendMessage):
        return str(e.purpose)
    if isinstance(e, AnswerRecorded):
        return f"{e.key}={_show(e.value)}"
    if isinstance(e, ScoreComputed):
        return f"score:{e.name}={_show(e.total)}/{e.band}"
    if isinstance(e, EscalationRequested):
        return f"{e.severity}:{e.reason}"
    assert isinstance(e, ConversationEnded)
    return f"end:{e.outcome}" + (f">{e.handover}" if e.handover else "")


def run(
    key: str,
    inputs: Sequence[Input],
    *,
    language: str = "en",
    history: Mapping[str, ScoreHistory] | None = None,
    prefill: Mapping[str, object] | None = None,
    finish: bool = True,
) -> Transcript:
    """Start ``key`` for Ana and feed ``inputs``; with ``finish`` the conversation must end."""
    ctx = Context(
        first_name=ANA.first_name,
        language=language,
        clinic_name=ANA.clinic_name,
        clinic_phone=ANA.clinic_phone,
        history=dict(history or {}),
        prefill=dict(prefill or {}),  # type: ignore[arg-type]
    )
    f = flow(key)
    step = start(f, ctx, NOW)
    events: list[Event] = list(step.events)
    for i, item in enumerate(inputs):
        assert step.state.active, f"{key}: conversation ended before input #{i}: {item!r}"
        inp = Reply(item) if isinstance(item, str) else item
        step = resume(f, step.state, inp, NOW + timedelta(minutes=i + 1))
        events += step.events
    t = Transcript(events)
    if finish:
        assert not step.state.active, f"{key}: still waiting after all inputs: {t.trace}"
        t.end  # noqa: B018 - asserts a single final end
    return t


def qa(*pairs: tuple[str, object]) -> list[str]:
    """Trace of answering questions in order: each answer followed by the next question."""
    out: list[str] = []
    for k, v in pairs:
        out += [f"{k}={_show(v)}", "question"]
    return out


def items(prefix: str, values: Sequence[int]) -> list[tuple[str, object]]:
    return [(f"{prefix}{i}", v) for i, v in enumerate(values, start=1)]


def spread(total: int, n: int, last: int = 0) -> list[int]:
    """``n`` item answers (0-3) summing to ``total`` with the last item fixed to ``last``."""
    rest = total - last
    out = []
    for _ in range(n - 1):
        v = min(3, rest)
        out.append(v)
        rest -= v
    assert rest == 0, "total out of reach"
    return [*out, last]


# -- the library as a whole --------------------------------------------------------------------


def test_library_has_the_expected_flows() -> None:
    assert KEYS == EXPECTED_KEYS


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_flow_validates_without_errors_or_warnings(key: str) -> None:
    parsed, problems = validate_flow_source(source(key), known_flows=KEYS)
    assert [p.format(f"{key}.yaml") for p in problems] == []
    assert parsed is not None
    assert parsed.key == key, "the file stem must be the flow key"


def _texts(f: Flow) -> list[tuple[str, str | None, str]]:
    """Every patient-facing text of a flow as (where, language, template)."""
    out: list[tuple[str, str | None, str]] = []

    def add(where: str, text: object) -> None:
        if text is not None:
            out.extend((where, lang, t) for lang, t in variants(text))  # type: ignore[arg-type]

    for node in f.nodes:
        if isinstance(node, AskNode | SayNode):
            add(node.id, node.text)
        elif isinstance(node, EscalateNode):
            add(node.id, node.reply)
        elif isinstance(node, EndNode):
            add(node.id, node.text)
        if isinstance(node, AskNode) and not isinstance(node.answer, str):
            add(f"{node.id}.hint", node.answer.hint)
    for name, spec in f.answer_sets.items():
        add(f"answer_sets.{name}.hint", spec.hint)
    if f.reminder is not None:
        add("reminder", f.reminder.text)
    return out


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_texts_are_gsm7_and_fit_320_characters_with_long_names(key: str) -> None:
    long_names = {
        "{first_name}": "Maximiliano-Alejandro",  # 21
        "{clinic_name}": "Riverside Interventional Psychiatry",  # 35
        "{clinic_phone}": "+1 (555) 010-0199",
        "{crisis_line}": "988",
    }
    for where, lang, template in _texts(flow(key)):
        assert non_gsm7_chars(template) == [], (where, lang)
        text = template
        for var, value in long_names.items():
            text = text.replace(var, value)
        if "{question}" in text:
            continue  # the reminder wraps a question, checked below
        assert gsm7_length(text) <= 320, (where, lang, gsm7_length(text))


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_reminder_around_the_longest_question_fits_320_characters(key: str) -> None:
    f = flow(key)
    assert f.reminder is not None and f.reminder.text is not None
    names = {"{first_name}": "Maximiliano", "{clinic_name}": "Lakeside Psychiatry"}
    for lang, reminder in variants(f.reminder.text):
        for node in f.nodes:
            if isinstance(node, AskNode):
                question = dict(variants(node.text)).get(lang) or dict(variants(node.text))["en"]
                text = reminder.replace("{question}", question)
                for var, value in names.items():
                    text = text.replace(var, value)
                assert gsm7_length(text) <= 320, (node.id, lang, gsm7_length(text))


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_every_flow_has_reminder_expiry_greeting_and_closing(key: str) -> None:
    f = flow(key)
    assert f.reminder is not None and f.reminder.after == "4h"
    assert f.expiry is not None and f.expiry.after == "24h"
    assert f.retries == 2
    first = next(t for w, lang, t in _texts(f) if lang in (None, "en"))
    assert "{first_name}" in first and "{clinic_name}" in first
    assert any(isinstance(n, EndNode) and n.text is not None for n in f.nodes)


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_validated_only_for_validated_instruments(key: str) -> None:
    validated = {"phq2", "phq9", "gad2", "gad7", "cssrs_screen", "mania_screen"}
    assert flow(key).validated is (key in validated)


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_every_text_has_spanish(key: str) -> None:
    missing = [(w, t) for w, lang, t in _texts(flow(key)) if lang is None]
    assert missing == [], "plain strings have no Spanish version"
    langs: dict[str, set[str | None]] = {}
    for where, lang, _ in _texts(flow(key)):
        langs.setdefault(where, set()).add(lang)
    assert {w: sorted(map(str, ls)) for w, ls in langs.items() if ls != {"en", "es"}} == {}


def test_post_session_description_says_not_validated() -> None:
    f = flow("post_session")
    assert f.validated is False
    assert "NOT a validated instrument" in f.description


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_reminder_repeats_the_pending_question(key: str) -> None:
    t = run(key, [ReminderDue()], finish=False)
    question = [e.text for e in t.events if isinstance(e, SendMessage)][-2]
    assert t.trace[-1] == "reminder"
    assert (
        t.messages[-1]
        == f"Lakeside Clinic reminder{', please reply' if key == 'cssrs_screen' else ''}: {question}"
    )


# -- crisis language in the middle of every flow ----------------------------------------------

# For each flow, paths through it; a crisis message is sent at every position of each.
PATHS: dict[str, list[list[str]]] = {
    "phq2": [["3", "3"], ["0", "0"]],
    "phq9": [["1"] * 9, ["0"] * 8 + ["2"]],
    "gad2": [["3", "3"], ["0", "1"]],
    "gad7": [["2"] * 7],
    "cssrs_screen": [["yes"] * 7, ["no", "no", "no"]],
    "daily_mood": [["1", "2"], ["1", "0"], ["8"]],
    "post_session": [
        ["no", "yes", "yes", "no", "3", "3", "yes", "yes", "yes", "1", "0", "I feel odd"],
        ["no", "no", "no", "no", "no", "no", "2", "1"],
        ["yes"],
    ],
    "dissociation": [["yes", "3", "8"], ["no"]],
    "substance_use": [["yes", "3"]],
    "mania_screen": [["4", "4", "4", "4", "4"]],
    "psychosis_screen": [["yes", "yes", "yes", "yes"], ["no", "no", "no"]],
    "bladder_screen": [["yes", "yes", "yes"]],
    "alcohol_sedatives": [["4", "4", "4", "yes"], ["0", "no"]],
}


def _crisis_cases() -> list[tuple[str, list[str]]]:
    cases = []
    for key, paths in PATHS.items():
        seen = set()
        for path in paths:
            for i in range(len(path)):
                prefix = tuple(path[:i])
                if prefix not in seen:
                    seen.add(prefix)
                    cases.append((key, list(prefix)))
    return cases


def test_paths_cover_every_flow() -> None:
    assert sorted(PATHS) == EXPECTED_KEYS


@pytest.mark.parametrize(("key", "prefix"), _crisis_cases())
def test_crisis_message_mid_flow_ends_it_with_a_critical_escalation(
    key: str, prefix: list[str]
) -> None:
    before = run(key, prefix, finish=False)
    t = run(key, [*prefix, CRISIS])
    new = t.events[len(before.events) :]
    crisis = [e for e in new if isinstance(e, EscalationRequested)]
    assert [(str(e.severity), e.reason) for e in crisis] == [("critical", "crisis_language")]
    assert _token(new[1]) == "crisis"
    assert "988" in new[1].text and "911" in new[1].text  # type: ignore[union-attr]
    assert str(t.end.outcome) == "crisis"
    assert t.end.handover is None
    assert CRISIS not in t.answers.values()


# -- PHQ-2 -------------------------------------------------------------------------------------

PHQ_OPTS = "0 Not at all, 1 Several days, 2 More than half the days, 3 Nearly every day"


@pytest.mark.parametrize(
    ("q1", "q2", "total", "band", "handover"),
    [
        ("0", "0", 0, "negative", None),
        ("1", "1", 2, "negative", None),
        ("2", "0", 2, "negative", None),
        ("2", "1", 3, "positive", "phq9"),
        ("0", "3", 3, "positive", "phq9"),
        ("3", "3", 6, "positive", "phq9"),
    ],
)
def test_phq2_threshold(q1: str, q2: str, total: int, band: str, handover: str | None) -> None:
    t = run("phq2", [q1, q2])
    closing = [] if handover else ["closing"]
    end = f"end:completed>{handover}" if handover else "end:completed"
    assert t.trace == [
        "question",
        f"q1={q1}",
        "question",
        f"q2={q2}",
        *closing,
        f"score:phq2={total}/{band}",
        end,
    ]
    assert t.escalations == []
    assert t.end.handover == handover
    assert dict(t.end.carry) == {"q1": int(q1), "q2": int(q2)}


def test_phq2_full_texts() -> None:
    t = run("phq2", ["several days", "not at all"])
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic. Over the last 2 weeks, how often have you been "
        f"bothered by little interest or pleasure in doing things? {PHQ_OPTS}",
        f"And how often have you been bothered by feeling down, depressed, or hopeless? {PHQ_OPTS}",
        "Thank you, Ana. Your answers have been sent to your care team at Lakeside Clinic. "
        "If you ever feel unsafe, call or text 988.",
    ]
    assert t.answers == {"q1": 1, "q2": 0}


def test_phq2_incomplete_screen_hands_over_to_phq9() -> None:
    t = run("phq2", ["1", "maybe", "dunno", "what"])
    assert t.trace == [
        "question",
        "q1=1",
        "question",
        "retry",
        "retry",
        "q2=null",
        "end:completed>phq9",
    ]
    assert t.scores == {}, "one of two items missing: no PHQ-2 score"
    assert dict(t.end.carry) == {"q1": 1}


def test_phq2_expired_ends_quietly() -> None:
    t = run("phq2", ["1", Expired()])
    assert t.trace == ["question", "q1=1", "question", "end:expired"]


# -- PHQ-9 -------------------------------------------------------------------------------------


def phq9_trace(values: Sequence[int], tail: Sequence[str]) -> list[str]:
    return ["info", "question", *qa(*items("q", values))[:-1], *tail]


@pytest.mark.parametrize(
    ("total", "band", "escalations"),
    [
        (0, "minimal", []),
        (4, "minimal", []),
        (5, "mild", []),
        (9, "mild", []),
        (10, "moderate", []),
        (14, "moderate", []),
        (15, "moderately severe", ["moderate:phq9_moderately_severe"]),
        (19, "moderately severe", ["moderate:phq9_moderately_severe"]),
        (20, "severe", ["high:phq9_severe"]),
        (24, "severe", ["high:phq9_severe"]),
    ],
)
def test_phq9_bands_and_severity_edges_with_item9_zero(
    total: int, band: str, escalations: list[str]
) -> None:
    values = spread(total, 9, last=0)
    t = run("phq9", [str(v) for v in values])
    assert t.trace == phq9_trace(
        values, ["closing", f"score:phq9={total}/{band}", *escalations, "end:completed"]
    )
    score = t.scores["phq9"]
    assert (score.total, score.band, score.flags, score.complete) == (total, band, (), True)
    assert (score.answered, score.items) == (9, 9)
    assert t.end.handover is None
    summaries = {
        "phq9_severe": f"PHQ-9 {total} (severe).",
        "phq9_moderately_severe": f"PHQ-9 {total} (moderately severe).",
    }
    for reason, summary in t.summaries.items():
        assert summary == summaries[reason]


@pytest.mark.parametrize(
    ("total", "q9", "band", "rules"),
    [
        (1, 1, "minimal", []),
        (9, 1, "mild", []),
        (10, 1, "moderate", []),
        (15, 2, "moderately severe", ["moderate:phq9_moderately_severe"]),
        (20, 1, "severe", ["high:phq9_severe"]),
        (27, 3, "severe", ["high:phq9_severe"]),
    ],
)
def test_phq9_item9_positive_escalates_and_hands_over_to_cssrs(
    total: int, q9: int, band: str, rules: list[str]
) -> None:
    values = spread(total, 9, last=q9)
    t = run("phq9", [str(v) for v in values])
    assert t.trace == phq9_trace(
        values,
        [
            "high:item9_positive",
            "closing",
            f"score:phq9={total}/{band}",
            *rules,
            "end:completed>cssrs_screen",
        ],
    )
    assert t.scores["phq9"].flags == ("item9_positive",)
    assert t.summaries["item9_positive"] == (
        f"PHQ-9 item 9 (thoughts of death or self-harm) = {q9}; PHQ-9 {total} ({band}). "
        "C-SSRS screener follows."
    )
    assert t.messages[-1] == (
        "Thank you for telling us, Ana. A few more questions follow so your care team can help. "
        "If you are in danger now, call or text 988, or call 911."
    )
    assert t.end.carry["q9"] == q9


def test_phq9_item9_zero_versus_one_at_the_same_total() -> None:
    zero = run("phq9", ["1", "1", "1", "1", "1", "0", "0", "0", "0"])
    one = run("phq9", ["1", "1", "1", "1", "0", "0", "0", "0", "1"])
    assert zero.scores["phq9"].total == one.scores["phq9"].total == 5
    assert zero.escalations == []
    assert zero.end.handover is None
    assert one.escalations == [("high", "item9_positive")]
    assert one.end.handover == "cssrs_screen"


def test_phq9_full_texts() -> None:
    t = run(
        "phq9",
        ["0", "several days", "2", "nearly every day", "1", "0", "zero", "1.", "not at all"],
    )
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic. Over the last 2 weeks, how often have you been "
        f"bothered by each of these problems? Reply {PHQ_OPTS}.",
        f"1/9 Little interest or pleasure in doing things? {PHQ_OPTS}",
        f"2/9 Feeling down, depressed, or hopeless? {PHQ_OPTS}",
        f"3/9 Trouble falling or staying asleep, or sleeping too much? {PHQ_OPTS}",
        f"4/9 Feeling tired or having little energy? {PHQ_OPTS}",
        f"5/9 Poor appetite or overeating? {PHQ_OPTS}",
        "6/9 Feeling bad about yourself, or that you are a failure or have let yourself or "
        f"your family down? {PHQ_OPTS}",
        "7/9 Trouble concentrating on things, such as reading the newspaper or watching "
        f"television? {PHQ_OPTS}",
        "8/9 Moving or speaking so slowly that other people could have noticed? Or the "
        "opposite, being so fidgety or restless that you have been moving around a lot more "
        f"than usual? {PHQ_OPTS}",
        "9/9 Thoughts that you would be better off dead, or of hurting yourself in some way? "
        f"{PHQ_OPTS}",
        "Thank you, Ana. Your answers have been sent to your care team at Lakeside Clinic. "
        "If you ever feel unsafe, call or text 988.",
    ]
    assert t.answers == {f"q{i}": v for i, v in enumerate([0, 1, 2, 3, 1, 0, 0, 1, 0], 1)}
    assert t.scores["phq9"].total == 8


def test_phq9_spanish_texts_and_answers() -> None:
    t = run(
        "phq9", ["ningun dia", "varios días", "2", "casi todos los dias"] + ["0"] * 5, language="es"
    )
    assert t.messages[0] == (
        "Hola Ana, le escribe Lakeside Clinic. Durante las ultimas 2 semanas, ¿qué tan seguido "
        "ha tenido molestias debido a cada uno de estos problemas? Responda 0 Ningun dia, "
        "1 Varios dias, 2 Mas de la mitad de los dias, 3 Casi todos los dias."
    )
    assert t.messages[1].startswith("1/9 ¿Poco interés o placer en hacer cosas? 0 Ningun dia")
    assert t.messages[9].startswith(
        "9/9 ¿Pensamientos de que estaria mejor muerto(a) o de lastimarse de alguna manera?"
    )
    assert t.messages[-1].startswith("Gracias, Ana. Sus respuestas se enviaron")
    assert t.scores["phq9"].total == 6


def test_phq9_retry_then_answer() -> None:
    t = run("phq9", ["2 or 3", "7", "2"] + ["0"] * 8)
    assert t.trace[:6] == ["info", "question", "retry", "retry", "q1=2", "question"]
    assert t.messages[2] == (
        "That looks like two answers. Please reply with a number from 0 to 3: 0 Not at all, "
        "1 Several days, 2 More than half the days, 3 Nearly every day."
    )
    assert t.messages[3] == (
        "Please reply with a number from 0 to 3: 0 Not at all, 1 Several days, "
        "2 More than half the days, 3 Nearly every day."
    )


def test_phq9_item9_unanswered_after_retries_escalates_high_and_prorates_openly() -> None:
    t = run("phq9", ["1"] * 8 + ["hmm", "dunno", "skip"])
    assert t.trace == phq9_trace(
        [1] * 8,
        [
            "question",
            "retry",
            "retry",
            "q9=null",
            "high:item9_unanswered",
            "closing",
            "score:phq9=9/mild",
            "end:completed",
        ],
    )
    score = t.scores["phq9"]
    assert (score.complete, score.answered, score.items) == (False, 8, 9)
    assert t.summaries["item9_unanswered"] == (
        "PHQ-9 item 9 (thoughts of death or self-harm) was not answered after re-asking; "
        "PHQ-9 9 (mild)."
    )
    assert t.messages[-1].startswith("Thank you, Ana. We could not read your answer")


def test_phq9_one_other_item_missing_is_prorated_without_escalation() -> None:
    t = run("phq9", ["x", "x", "x"] + ["2"] * 7 + ["0"])
    score = t.scores["phq9"]
    assert (score.total, score.band, score.complete, score.answered) == (
        15.75,
        "moderately severe",
        False,
        8,
    )
    assert t.escalations == [("moderate", "phq9_moderately_severe")]
    assert t.answers["q1"] is None


def test_phq9_two_missing_items_give_no_score() -> None:
    t = run("phq9", ["x", "x", "x", "x", "x", "x"] + ["3"] * 6 + ["0"])
    assert t.scores == {}
    assert t.escalations == [], "no score, no severity rule; item 9 was answered (0)"
    assert t.trace[-2:] == ["closing", "end:completed"]


def test_phq9_expired_mid_questionnaire_flags_unscreened_item9() -> None:
    t = run("phq9", ["3", "3", Expired()])
    assert t.trace == [
        "info",
        "question",
        "q1=3",
        "question",
        "q2=3",
        "question",
        "moderate:item9_unanswered",
        "end:expired",
    ]
    assert t.scores == {}
    assert t.summaries["item9_unanswered"] == (
        "PHQ-9 not finished: item 9 (thoughts of death or self-harm) was not answered."
    )


def test_phq9_expired_before_item9_never_prorates_silently() -> None:
    t = run("phq9", ["3"] * 8 + [Expired()])
    # 8 of 9 answered: the prorated total (27) is reported as incomplete, the
    # severity rule fires, and the missing item 9 is escalated.
    assert t.trace[-5:] == [
        "question",
        "high:item9_unanswered",
        "score:phq9=27/severe",
        "high:phq9_severe",
        "end:expired",
    ]
    assert t.scores["phq9"].complete is False
    assert "after re-asking" in t.summaries["item9_unanswered"]


# PHQ-9 relapse rules (score context from the patient's history).


def _phq9(total: int, history: ScoreHistory) -> Transcript:
    return run("phq9", [str(v) for v in spread(total, 9)], history={"phq9": history})


def weekly(*totals: float, weeks_ago: int | None = None) -> ScoreHistory:
    """Totals a week apart, the last one a week before NOW (or ``weeks_ago`` weeks)."""
    last = weeks_ago if weeks_ago is not None else 1
    n = len(totals)
    at = tuple((NOW - timedelta(weeks=last + n - 1 - i)).timestamp() for i in range(n))
    return ScoreHistory(tuple(float(t) for t in totals), at)


def dated(*points: tuple[float, int]) -> ScoreHistory:
    """(total, weeks before NOW) pairs, oldest first."""
    return ScoreHistory(
        tuple(float(t) for t, _ in points),
        tuple((NOW - timedelta(weeks=w)).timestamp() for _, w in points),
    )


@pytest.mark.parametrize(
    ("total", "history", "escalations"),
    [
        # best of the last 12 weeks 4: +6 and >= 10 -> possible relapse
        (10, weekly(22, 6, 4), ["high:possible_relapse"]),
        # change exactly 5 at the threshold
        (10, weekly(22, 5), ["high:possible_relapse"]),
        # +4 only
        (10, weekly(22, 6), []),
        # +5 but the total is 9 (< 10)
        (9, weekly(22, 4), []),
        # the best counts whatever treatments came after it (the usual case: a treatment
        # after the last PHQ-9); 14 weeks ago it is outside the window
        (12, weekly(22, 3, 9), ["high:possible_relapse"]),
        (12, weekly(3, 9, weeks_ago=13), []),
        # older states carry no times: every total counts
        (12, ScoreHistory((22.0, 3.0, 9.0)), ["high:possible_relapse"]),
        # with severity: 20 is severe and 16 above the best
        (20, weekly(24, 4), ["high:phq9_severe", "high:possible_relapse"]),
        # no history at all
        (14, ScoreHistory(), []),
    ],
)
def test_phq9_possible_relapse(total: int, history: ScoreHistory, escalations: list[str]) -> None:
    t = _phq9(total, history)
    assert [f"{s}:{r}" for s, r in t.escalations] == escalations
    if "high:possible_relapse" in escalations:
        assert t.summaries["possible_relapse"] == (
            f"Possible relapse: PHQ-9 {total} ({t.scores['phq9'].band}), 5 or more points above "
            "the best PHQ-9 of the last 12 weeks."
        )


@pytest.mark.parametrize(
    ("total", "history", "escalations"),
    [
        # baseline 24, a response since (11 <= 12): 11 then 12 -> sustained worsening
        (12, weekly(24, 11), ["high:sustained_worsening"]),
        # baseline 18, responded to 5 but more than 12 weeks ago, then 11 and now 12
        (12, dated((18, 15), (5, 14), (11, 1)), ["high:sustained_worsening"]),
        # previous total 9: not two in a row at 10 or more
        (12, weekly(18, 5, 9), ["high:possible_relapse"]),
        # current 9
        (9, weekly(18, 5, 11), []),
        # 11 after 12: better than last time, not worsening
        (11, weekly(24, 11, 12), []),
        # never a response (baseline 16, never at or below 8)
        (12, weekly(16, 11), []),
        # the only low score is today's: a response is judged from past scores only
        (12, weekly(24), []),
    ],
)
def test_phq9_sustained_worsening_after_response(
    total: int, history: ScoreHistory, escalations: list[str]
) -> None:
    t = _phq9(total, history)
    assert [f"{s}:{r}" for s, r in t.escalations] == escalations
    if "high:sustained_worsening" in escalations:
        assert t.summaries["sustained_worsening"] == (
            f"Sustained worsening after a response: PHQ-9 {total} (moderate) and the previous "
            "PHQ-9 was also 10 or more."
        )


_RELAPSE = {"possible_relapse", "sustained_worsening"}


@given(
    start=st.integers(min_value=10, max_value=24),
    drops=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=10),
)
def test_a_steadily_improving_series_never_escalates_as_relapse(
    start: int, drops: list[int]
) -> None:
    """Each PHQ-9 lower than the one before (down to 0): no relapse or worsening, ever."""
    series = [start]
    for drop in drops:
        series.append(max(0, series[-1] - drop))
    *past, current = series
    t = _phq9(current, weekly(*past))
    assert not _RELAPSE & {r for _s, r in t.escalations}


@given(
    past=st.lists(st.integers(min_value=0, max_value=24), min_size=1, max_size=8),
    best=st.integers(min_value=0, max_value=19),
    rise=st.integers(min_value=5, max_value=24),
    best_weeks_ago=st.integers(min_value=1, max_value=11),
)
def test_a_rise_of_five_to_ten_or_more_from_a_recent_best_always_escalates(
    past: list[int], best: int, rise: int, best_weeks_ago: int
) -> None:
    """Whatever came before (and whatever treatments came between), a PHQ-9 of 10 or more
    that is 5 or more above the best of the last 12 weeks is a possible relapse."""
    current = min(24, max(10, best + rise))
    assume(current - best >= 5)
    older = [(t, best_weeks_ago + len(past) - i) for i, t in enumerate(past)]
    t = _phq9(current, dated(*older, (best, best_weeks_ago)))
    assert "possible_relapse" in {r for _s, r in t.escalations}


# PHQ-2 -> PHQ-9 hand-over with prefill.


def test_phq2_positive_hands_over_and_phq9_skips_prefilled_items() -> None:
    screen = run("phq2", ["2", "nearly every day"])
    assert screen.end.handover == "phq9"
    carry = dict(screen.end.carry)
    assert carry == {"q1": 2, "q2": 3}
    t = run("phq9", ["1", "1", "1", "0", "0", "0", "0"], prefill=carry)
    assert t.trace == [
        "info",
        "q1=2",
        "q2=3",
        "question",
        *qa(("q3", 1), ("q4", 1), ("q5", 1), ("q6", 0), ("q7", 0), ("q8", 0))[:-1],
        "question",
        "q9=0",
        "closing",
        "score:phq9=8/mild",
        "end:completed",
    ]
    prefilled = [e for e in t.events if isinstance(e, AnswerRecorded) and e.raw is None]
    assert [(e.key, e.value) for e in prefilled] == [("q1", 2), ("q2", 3)]
    assert t.messages[1].startswith("3/9 Trouble falling or staying asleep")
    assert not any(m.startswith(("1/9", "2/9")) for m in t.messages)


def test_phq2_prefill_to_phq9_reaching_severe() -> None:
    screen = run("phq2", ["3", "3"])
    t = run("phq9", ["3", "3", "3", "3", "3", "0", "0"], prefill=dict(screen.end.carry))
    assert t.scores["phq9"].total == 21
    assert t.escalations == [("high", "phq9_severe")]


def test_phq2_incomplete_hand_over_asks_the_missing_item_in_phq9() -> None:
    screen = run("phq2", ["x", "x", "x", "2"])
    assert dict(screen.end.carry) == {"q2": 2}
    t = run("phq9", ["1"] + ["0"] * 7, prefill=dict(screen.end.carry))
    assert t.trace[:6] == ["info", "question", "q1=1", "q2=2", "question", "q3=0"]
    assert t.scores["phq9"].total == 3


# -- GAD-2 / GAD-7 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q1", "q2", "total", "band", "handover"),
    [
        ("0", "0", 0, "negative", None),
        ("1", "1", 2, "negative", None),
        ("0", "2", 2, "negative", None),
        ("1", "2", 3, "positive", "gad7"),
        ("3", "0", 3, "positive", "gad7"),
        ("3", "3", 6, "positive", "gad7"),
    ],
)
def test_gad2_threshold(q1: str, q2: str, total: int, band: str, handover: str | None) -> None:
    t = run("gad2", [q1, q2])
    closing = [] if handover else ["closing"]
    end = f"end:completed>{handover}" if handover else "end:completed"
    assert t.trace == [
        "question",
        f"q1={q1}",
        "question",
        f"q2={q2}",
        *closing,
        f"score:gad2={total}/{band}",
        end,
    ]
    assert t.escalations == []


def test_gad2_full_texts_and_incomplete_hand_over() -> None:
    t = run("gad2", ["often", "x", "x", "x"])
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic. Over the last 2 weeks, how often have you been "
        f"bothered by feeling nervous, anxious, or on edge? {PHQ_OPTS}",
        "And how often have you been bothered by not being able to stop or control worrying? "
        f"{PHQ_OPTS}",
        "Please reply with a number from 0 to 3: 0 Not at all, 1 Several days, "
        "2 More than half the days, 3 Nearly every day.",
        "Please reply with a number from 0 to 3: 0 Not at all, 1 Several days, "
        "2 More than half the days, 3 Nearly every day.",
    ]
    assert t.end.handover == "gad7"
    assert dict(t.end.carry) == {"q1": 2}


@pytest.mark.parametrize(
    ("total", "band", "escalations"),
    [
        (0, "minimal", []),
        (4, "minimal", []),
        (5, "mild", []),
        (9, "mild", []),
        (10, "moderate", ["moderate:gad7_moderate"]),
        (14, "moderate", ["moderate:gad7_moderate"]),
        (15, "severe", ["high:gad7_severe"]),
        (21, "severe", ["high:gad7_severe"]),
    ],
)
def test_gad7_bands_and_edges(total: int, band: str, escalations: list[str]) -> None:
    values = spread(total, 7, last=min(total, 3))
    t = run("gad7", [str(v) for v in values])
    assert t.trace == [
        "info",
        "question",
        *qa(*items("q", values))[:-1],
        "closing",
        f"score:gad7={total}/{band}",
        *escalations,
        "end:completed",
    ]
    assert t.scores["gad7"].complete is True
    for summary in t.summaries.values():
        assert summary == f"GAD-7 {total} ({band})."


def test_gad7_spanish_first_item() -> None:
    t = run("gad7", ["nunca"] * 7, language="es")
    assert t.messages[1] == (
        "1/7 ¿Se ha sentido nervioso(a), ansioso(a) o con los nervios de punta? 0 Nunca, "
        "1 Varios dias, 2 Mas de la mitad de los dias, 3 Casi todos los dias"
    )
    assert t.scores["gad7"].total == 0


def test_gad2_positive_hands_over_and_gad7_skips_prefilled_items() -> None:
    screen = run("gad2", ["2", "2"])
    assert screen.end.handover == "gad7"
    t = run("gad7", ["2", "2", "1", "1", "1"], prefill=dict(screen.end.carry))
    assert t.trace == [
        "info",
        "q1=2",
        "q2=2",
        "question",
        *qa(("q3", 2), ("q4", 2), ("q5", 1), ("q6", 1))[:-1],
        "question",
        "q7=1",
        "closing",
        "score:gad7=11/moderate",
        "moderate:gad7_moderate",
        "end:completed",
    ]
    assert t.messages[1].startswith("3/7 Worrying too much about different things?")


def test_gad7_one_missing_item_is_prorated() -> None:
    t = run("gad7", ["x", "x", "x"] + ["2"] * 6)
    score = t.scores["gad7"]
    assert (score.total, score.band, score.complete) == (14, "moderate", False)
    assert t.escalations == [("moderate", "gad7_moderate")]


# -- C-SSRS screener ---------------------------------------------------------------------------

CRITICAL_REPLY_INTENT = (
    "Thank you for telling us. Please call or text 988 now, or call 911 if you might act on "
    "these thoughts. Your care team at Lakeside Clinic has been alerted."
)
END_CRITICAL = (
    "Thank you for answering, Ana. Please call or text 988 now, or call 911 if you are in "
    "danger. Your care team at Lakeside Clinic will contact you."
)
END_HIGH = (
    "Thank you for answering, Ana. Your care team at Lakeside Clinic has been told and will "
    "contact you. If no one from your care team has taken it up within 60 minutes, the on-call "
    "clinician is paged. If you feel unsafe at any time, call or text 988, or call 911."
)
END_MODERATE = (
    "Thank you for answering, Ana. Your care team at Lakeside Clinic will read your answers "
    "during clinic hours and contact you. If you feel unsafe at any time, call or text 988, "
    "or call 911."
)
BEHAVIOR_EXAMPLES = (
    "Next, about things people do to end their life, for example: collected pills, got a gun, "
    "gave away valuables, wrote a will or suicide note, took out pills but didn't swallow them, "
    "held a gun but changed their mind, went to a roof but didn't jump; or took pills, cut "
    "themselves, tried to hang or shoot themselves."
)
END_OK = (
    "Thank you for answering, Ana. Your answers have been sent to your care team at Lakeside "
    "Clinic. If you ever feel unsafe, call or text 988."
)


def test_cssrs_all_no_full_texts() -> None:
    t = run("cssrs_screen", ["no", "nope", "never"])
    assert t.trace == [
        "info",
        "question",
        *qa(("wish_dead", False), ("thoughts", False))[:-1],
        "info",
        "question",
        "behavior=no",
        "closing",
        "end:completed",
    ]
    assert t.escalations == []
    assert t.messages == [
        "Ana, Lakeside Clinic here. A few YES or NO questions so your care team can keep you "
        "safe. If you are in danger now, call or text 988, or call 911.",
        "In the past month, have you wished you were dead or wished you could go to sleep and "
        "not wake up? YES or NO",
        "In the past month, have you actually had any thoughts of killing yourself? YES or NO",
        BEHAVIOR_EXAMPLES,
        "Have you ever done anything, started to do anything, or prepared to do anything to "
        "end your life? YES or NO",
        END_OK,
    ]


def test_cssrs_all_yes_full_texts() -> None:
    t = run("cssrs_screen", ["yes"] * 7)
    assert t.trace == [
        "info",
        "question",
        *qa(("wish_dead", True), ("thoughts", True), ("method", True))[:-1],
        "question",
        "intent=yes",
        "critical:cssrs_intent",
        "escalation_reply",
        "question",
        "plan=yes",
        "info",
        "question",
        "behavior=yes",
        "question",
        "behavior_3m=yes",
        "closing",
        "end:completed",
    ]
    assert t.messages[1:] == [
        "In the past month, have you wished you were dead or wished you could go to sleep and "
        "not wake up? YES or NO",
        "In the past month, have you actually had any thoughts of killing yourself? YES or NO",
        "In the past month, have you been thinking about how you might do this? YES or NO",
        "In the past month, have you had these thoughts and had some intention of acting on "
        "them? YES or NO",
        CRITICAL_REPLY_INTENT,
        "In the past month, have you started to work out or worked out the details of how to "
        "kill yourself? Do you intend to carry out this plan? YES or NO",
        BEHAVIOR_EXAMPLES,
        "Have you ever done anything, started to do anything, or prepared to do anything to "
        "end your life? YES or NO",
        "Was this within the past 3 months? YES or NO",
        END_CRITICAL,
    ]
    assert t.summaries == {
        "cssrs_intent": "C-SSRS Q4 yes: suicidal thoughts with some intention of acting on "
        "them in the past month."
    }


@pytest.mark.parametrize(
    ("replies", "middle", "escalations", "closing"),
    [
        pytest.param(
            ["yes", "no", "no"],
            ["wish_dead=yes", "question", "thoughts=no", "info", "question", "behavior=no"],
            ["moderate:cssrs_ideation"],
            END_MODERATE,
            id="q1-only",
        ),
        pytest.param(
            ["no", "yes", "no", "no", "no", "no"],
            [
                "wish_dead=no",
                "question",
                "thoughts=yes",
                "question",
                "method=no",
                "question",
                "intent=no",
                "question",
                "plan=no",
                "info",
                "question",
                "behavior=no",
            ],
            ["moderate:cssrs_ideation"],
            END_MODERATE,
            id="q2-only",
        ),
        pytest.param(
            ["yes", "yes", "yes", "no", "no", "no"],
            [
                "wish_dead=yes",
                "question",
                "thoughts=yes",
                "question",
                "method=yes",
                "question",
                "intent=no",
                "question",
                "plan=no",
                "info",
                "question",
                "behavior=no",
            ],
            ["high:cssrs_method"],
            END_HIGH,
            id="q3-method",
        ),
        pytest.param(
            ["no", "yes", "no", "yes", "no", "no"],
            [
                "wish_dead=no",
                "question",
                "thoughts=yes",
                "question",
                "method=no",
                "question",
                "intent=yes",
                "critical:cssrs_intent",
                "escalation_reply",
                "question",
                "plan=no",
                "info",
                "question",
                "behavior=no",
            ],
            ["critical:cssrs_intent"],
            END_CRITICAL,
            id="q4-intent",
        ),
        pytest.param(
            ["yes", "yes", "yes", "no", "yes", "no"],
            [
                "wish_dead=yes",
                "question",
                "thoughts=yes",
                "question",
                "method=yes",
                "question",
                "intent=no",
                "question",
                "plan=yes",
                "critical:cssrs_plan",
                "escalation_reply",
                "info",
                "question",
                "behavior=no",
            ],
            ["critical:cssrs_plan"],
            END_CRITICAL,
            id="q5-plan",
        ),
        pytest.param(
            ["yes", "yes", "yes", "yes", "yes", "no"],
            [
                "wish_dead=yes",
                "question",
                "thoughts=yes",
                "question",
                "method=yes",
                "question",
                "intent=yes",
                "critical:cssrs_intent",
                "escalation_reply",
                "question",
                "plan=yes",
                "info",
                "question",
                "behavior=no",
            ],
            ["critical:cssrs_intent"],
            END_CRITICAL,
            id="q4-and-q5-one-critical",
        ),
        pytest.param(
            ["no", "no", "yes", "no"],
            [
                "wish_dead=no",
                "question",
                "thoughts=no",
                "info",
                "question",
                "behavior=yes",
                "question",
                "behavior_3m=no",
                "high:cssrs_lifetime_behavior",
            ],
            ["high:cssrs_lifetime_behavior"],
            END_HIGH,
            id="q6-lifetime-only",
        ),
        pytest.param(
            ["yes", "no", "yes", "no"],
            [
                "wish_dead=yes",
                "question",
                "thoughts=no",
                "info",
                "question",
                "behavior=yes",
                "question",
                "behavior_3m=no",
                "high:cssrs_lifetime_behavior",
            ],
            # Columbia's risk is the highest of the answers: moderate (lifetime behaviour)
            ["high:cssrs_lifetime_behavior"],
            END_HIGH,
            id="q1-and-q6-lifetime",
        ),
        pytest.param(
            ["no", "yes", "no", "yes", "no", "yes", "yes"],
            [
                "wish_dead=no",
                "question",
                "thoughts=yes",
                "question",
                "method=no",
                "question",
                "intent=yes",
                "critical:cssrs_intent",
                "escalation_reply",
                "question",
                "plan=no",
                "info",
                "question",
                "behavior=yes",
                "question",
                "behavior_3m=yes",
            ],
            ["critical:cssrs_intent"],
            END_CRITICAL,
            id="q4-and-q6-recent-one-critical",
        ),
    ],
)
def test_cssrs_paths(
    replies: list[str], middle: list[str], escalations: list[str], closing: str
) -> None:
    t = run("cssrs_screen", replies)
    trailing_esc = [e for e in escalations if e not in middle]
    assert t.trace == ["info", "question", *middle, *trailing_esc, "closing", "end:completed"]
    assert [f"{s}:{r}" for s, r in t.escalations] == escalations
    assert t.messages[-1] == closing
    assert t.end.handover is None


def test_cssrs_recent_behavior_is_critical_and_ends_with_the_crisis_reply() -> None:
    t = run("cssrs_screen", ["no", "no", "yes", "yes"])
    assert t.trace == [
        "info",
        "question",
        *qa(("wish_dead", False), ("thoughts", False))[:-1],
        "info",
        "question",
        "behavior=yes",
        "question",
        "behavior_3m=yes",
        "critical:cssrs_recent_behavior",
        "escalation_reply",
        "end:completed",
    ]
    assert t.messages[-1] == (
        "Thank you for telling us. Please call or text 988 now, or call 911 if you are in "
        "danger. Your care team at Lakeside Clinic has been alerted."
    )
    assert t.summaries["cssrs_recent_behavior"].startswith("C-SSRS Q6 yes: suicidal behaviour")


def test_cssrs_method_and_recent_behavior_gives_the_critical_only() -> None:
    t = run("cssrs_screen", ["yes", "yes", "yes", "no", "no", "yes", "yes"])
    assert t.escalations == [("critical", "cssrs_recent_behavior")]


def test_cssrs_plan_reply_text() -> None:
    t = run("cssrs_screen", ["no", "yes", "no", "no", "yes", "no"])
    assert (
        "Thank you for telling us. Please call or text 988 now, or call 911 if you might act on "
        "this plan. Your care team at Lakeside Clinic has been alerted."
    ) in t.messages


def test_cssrs_unanswered_q2_is_treated_as_yes_and_named() -> None:
    t = run("cssrs_screen", ["no", "x", "x", "x", "no", "no", "no", "no"])
    assert t.answers == {
        "wish_dead": False,
        "thoughts": None,
        "method": False,
        "intent": False,
        "plan": False,
        "behavior": False,
    }
    assert t.escalations == [("high", "cssrs_unanswered")]
    assert "Q2 (thoughts of killing themselves)" in t.summaries["cssrs_unanswered"]
    assert t.messages[-1] == END_HIGH


def test_cssrs_unanswered_q1_is_high() -> None:
    t = run("cssrs_screen", ["x", "x", "x", "no", "no"])
    assert t.escalations == [("high", "cssrs_unanswered")]
    assert "Q1 (wish to be dead)" in t.summaries["cssrs_unanswered"]


@pytest.mark.parametrize(
    ("replies", "named"),
    [
        (["no", "yes", "no", "x", "x", "x", "no", "no"], "Q4 (intention of acting)"),
        (["no", "yes", "no", "no", "x", "x", "x", "no"], "Q5 (a worked-out plan)"),
        (["no", "no", "x", "x", "x"], "Q6 (suicidal behaviour, ever)"),
    ],
)
def test_cssrs_unanswered_intent_plan_or_behaviour_is_high_and_named(
    replies: list[str], named: str
) -> None:
    t = run("cssrs_screen", replies)
    assert ("high", "cssrs_unanswered") in t.escalations
    assert named in t.summaries["cssrs_unanswered"]
    assert not any(severity == "critical" for severity, _reason in t.escalations)


def test_cssrs_unanswered_timing_of_behavior_is_high() -> None:
    t = run("cssrs_screen", ["no", "no", "yes", "x", "x", "x"])
    assert t.answers["behavior_3m"] is None
    assert t.escalations == [("high", "cssrs_unanswered")]


@pytest.mark.parametrize(
    ("replies", "escalations", "named"),
    [
        ([], ["high:cssrs_unanswered"], "Q1"),
        (["no"], ["high:cssrs_unanswered"], "Q2"),
        (["yes", "yes"], ["high:cssrs_unanswered"], "Q3"),
        (
            ["no", "yes", "no", "yes"],
            ["critical:cssrs_intent", "high:cssrs_unanswered"],
            "Q5",
        ),
        (["no", "no", "yes"], ["high:cssrs_unanswered"], "Q6 (behaviour within"),
    ],
)
def test_cssrs_expiry_mid_screen_leaves_at_least_high_naming_the_question(
    replies: list[str], escalations: list[str], named: str
) -> None:
    t = run("cssrs_screen", [*replies, Expired()])
    assert [f"{s}:{r}" for s, r in t.escalations] == escalations
    assert t.trace[-2:] == ["high:cssrs_unanswered", "end:expired"]
    assert named in t.summaries["cssrs_unanswered"]


def test_cssrs_is_not_prefilled_by_phq9_answers() -> None:
    phq9 = run("phq9", ["1"] * 8 + ["1"])
    assert phq9.end.handover == "cssrs_screen"
    t = run("cssrs_screen", ["no", "no", "no"], prefill=dict(phq9.end.carry))
    assert t.trace[:2] == ["info", "question"]
    assert t.answers == {"wish_dead": False, "thoughts": False, "behavior": False}


def test_cssrs_spanish() -> None:
    t = run("cssrs_screen", ["si", "no", "no"], language="es")
    assert t.messages[1] == (
        "En el ultimo mes, ¿ha deseado estar muerto(a) o poder dormirse y no despertar? SI o NO"
    )
    assert t.escalations == [("moderate", "cssrs_ideation")]


# -- daily mood --------------------------------------------------------------------------------

ITEM9_DAILY = (
    "Over the last 2 weeks, how often have you been bothered by thoughts that you would be "
    f"better off dead, or of hurting yourself in some way? {PHQ_OPTS}"
)


def test_daily_mood_fine_full_texts() -> None:
    t = run("daily_mood", ["7"])
    assert t.trace == ["question", "mood=7", "closing", "end:completed"]
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic. How is your mood today, from 0 (worst) to 10 (best)?",
        "Thank you, Ana. Your care team at Lakeside Clinic will see this. If you ever feel "
        "unsafe, call or text 988.",
    ]


@pytest.mark.parametrize("mood", ["3", "10", "three"])
def test_daily_mood_above_two_asks_nothing_more(mood: str) -> None:
    t = run("daily_mood", [mood])
    assert t.trace[-2:] == ["closing", "end:completed"]
    assert t.escalations == []


def test_daily_mood_two_with_item9_zero_is_low() -> None:
    t = run("daily_mood", ["2", "not at all"])
    assert t.trace == [
        "question",
        "mood=2",
        "question",
        "q9=0",
        "low:very_low_mood",
        "closing",
        "end:completed",
    ]
    assert t.messages[1] == ITEM9_DAILY
    assert t.summaries == {"very_low_mood": "Daily mood 2/10; PHQ-9 item 9 = 0."}
    assert t.messages[-1] == (
        "Thank you, Ana. I'm sorry today is hard. Your care team at Lakeside Clinic will see "
        "your answers. If you ever feel unsafe, call or text 988."
    )


@pytest.mark.parametrize(("mood", "q9", "value"), [("2", "1", 1), ("0", "nearly every day", 3)])
def test_daily_mood_item9_positive_is_high_and_hands_over_to_cssrs(
    mood: str, q9: str, value: int
) -> None:
    t = run("daily_mood", [mood, q9])
    assert t.trace == [
        "question",
        f"mood={mood}",
        "question",
        f"q9={value}",
        "high:item9_positive",
        "closing",
        "end:completed>cssrs_screen",
    ]
    assert t.summaries["item9_positive"] == (
        f"Daily mood {mood}/10 and PHQ-9 item 9 (thoughts of death or self-harm) = {value}. "
        "C-SSRS screener follows."
    )
    assert dict(t.end.carry) == {"mood": int(mood), "q9": value}


def test_daily_mood_item9_unanswered_is_high() -> None:
    t = run("daily_mood", ["1", "x", "x", "x"])
    assert t.trace == [
        "question",
        "mood=1",
        "question",
        "retry",
        "retry",
        "q9=null",
        "high:item9_unanswered",
        "closing",
        "end:completed",
    ]
    assert t.summaries["item9_unanswered"] == (
        "Daily mood 1/10; PHQ-9 item 9 (thoughts of death or self-harm) was asked but not answered."
    )


def test_daily_mood_expired_while_item9_pending_is_high() -> None:
    t = run("daily_mood", ["2", Expired()])
    assert t.trace == ["question", "mood=2", "question", "high:item9_unanswered", "end:expired"]


def test_daily_mood_expired_before_any_answer_is_quiet() -> None:
    t = run("daily_mood", [Expired()])
    assert t.trace == ["question", "end:expired"]


def test_daily_mood_unparseable_mood_ends_quietly() -> None:
    t = run("daily_mood", ["11", "meh", "ok"])
    assert t.trace == ["question", "retry", "retry", "mood=null", "closing", "end:completed"]
    assert t.escalations == []


def test_daily_mood_spanish() -> None:
    t = run("daily_mood", ["dos", "ningun dia"], language="es")
    assert t.messages[0] == (
        "Hola Ana, le escribe Lakeside Clinic. ¿Como esta su animo hoy, de 0 (peor) a 10 (mejor)?"
    )
    assert t.answers == {"mood": 2, "q9": 0}
    assert t.escalations == [("low", "very_low_mood")]


# -- post_session ------------------------------------------------------------------------------

POST_OK = ["no", "no", "no", "no", "no", "no", "8", "nothing"]


def test_post_session_all_well_full_texts() -> None:
    t = run("post_session", POST_OK)
    assert t.trace == [
        "info",
        "question",
        *qa(
            ("bp_now", False),
            ("bp_since", False),
            ("dissociation", False),
            ("sedation", False),
            ("nausea", False),
            ("drove", False),
            ("mood", 8),
        )[:-1],
        "question",
        "anything=nothing",
        "closing",
        "end:completed",
    ]
    assert t.escalations == []
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic checking in the day after your treatment. A few quick "
        "questions.",
        "Right now, do you have a severe headache, chest pain, a change in your vision, or "
        "confusion? YES or NO",
        "Since you left the clinic, did you have a severe headache, chest pain, a change in your "
        "vision, or confusion that has now passed? YES or NO",
        "Since you left the clinic, have you felt detached or unreal, as if you or the world "
        "around you were not real? YES or NO",
        "Are you still unusually sleepy or drowsy today? YES or NO",
        "Have you had nausea or vomiting since your treatment? YES or NO",
        "Did you drive before you had a full night of sleep after your treatment? YES or NO",
        "How is your mood today, from 0 (worst) to 10 (best)?",
        "Anything else you want your care team to know? Reply in a few words, or NO if nothing.",
        "Thank you, Ana. Your care team at Lakeside Clinic will see your answers. If you ever "
        "feel unsafe, call or text 988.",
    ]


def test_post_session_bp_signs_right_now_are_critical_and_end() -> None:
    t = run("post_session", ["yes I have a bad headache"])
    assert t.trace == [
        "info",
        "question",
        "bp_now=yes",
        "critical:bp_emergency_signs",
        "escalation_reply",
        "end:completed",
    ]
    assert t.messages[-1] == (
        "These can be signs of a dangerous rise in blood pressure. Call 911 now. Your care team "
        "at Lakeside Clinic has been alerted."
    )


def test_post_session_bp_signs_that_passed_are_high_and_the_team_calls() -> None:
    t = run("post_session", ["no", "yes", *POST_OK[2:]])
    assert t.escalations == [("high", "bp_signs_passed")]
    assert t.trace[4:7] == ["bp_since=yes", "high:bp_signs_passed", "escalation_reply"]
    reply = t.messages[3]
    assert "will call you" in reply and "on-call clinician is paged" in reply
    assert "call 911 right away" in reply


@pytest.mark.parametrize("position", [0, 1])
def test_post_session_an_unanswered_bp_question_is_high_never_no(position: int) -> None:
    replies = ["no", "no"]
    replies[position : position + 1] = ["x", "x", "x"]
    t = run("post_session", [*replies, *POST_OK[2:]])
    assert t.escalations == [("high", "bp_signs_unanswered")]


@pytest.mark.parametrize(
    ("replies", "escalated"),
    [
        # still happening the next morning: high, whatever its strength
        (["yes", "yes", "mild"], True),
        # passed within two hours of leaving and mild: expected, recorded only
        (["yes", "no", "1", "1"], False),
        (["yes", "no", "most of the evening", "2"], False),
        # lasted until sleep or later
        (["yes", "no", "3", "mild"], True),
        # severe however short
        (["yes", "no", "1", "severe"], True),
    ],
)
def test_post_session_dissociation_follows_the_real_timeline(
    replies: list[str], escalated: bool
) -> None:
    t = run("post_session", ["no", "no", *replies, "no", "no", "no", "7", "no"])
    assert t.escalations == ([("high", "prolonged_dissociation")] if escalated else [])


def test_post_session_dissociation_unanswered_details_do_not_escalate() -> None:
    t = run("post_session", ["no", "no", "yes", "no", "x", "x", "x", "x", "x", "x", *POST_OK[3:]])
    assert t.answers["dissociation_duration"] is None
    assert t.answers["dissociation_severity"] is None
    assert t.escalations == []


def test_post_session_sedation_nausea_driving_and_note() -> None:
    t = run("post_session", ["no", "no", "no", "yes", "yes", "yes", "5", "Headache last night"])
    assert [f"{s}:{r}" for s, r in t.escalations] == [
        "low:next_day_sedation",
        "low:drove_after_session",
        "low:patient_note",
    ]
    assert t.summaries["patient_note"] == "Day-after note from the patient: Headache last night"


def test_post_session_low_mood_asks_item9_and_hands_over_to_the_cssrs() -> None:
    t = run("post_session", ["no", "no", "no", "no", "no", "no", "2", "sometimes"])
    assert [f"{s}:{r}" for s, r in t.escalations] == ["high:item9_positive"]
    assert t.end.handover == "cssrs_screen"
    assert "A few more questions follow" in t.messages[-1]


def test_post_session_low_mood_with_item9_zero_is_low_and_goes_on() -> None:
    t = run("post_session", ["no", "no", "no", "no", "no", "no", "1", "0", "no"])
    assert t.escalations == [("low", "very_low_mood")]
    assert t.end.handover is None


@pytest.mark.parametrize("note", ["no", "No.", "NO", "Nothing", "nope", "nada", "No thanks"])
def test_post_session_nothing_else_is_not_escalated(note: str) -> None:
    t = run("post_session", [*POST_OK[:-1], note])
    assert t.escalations == []


def test_post_session_mood_three_is_not_low() -> None:
    t = run("post_session", ["no", "no", "no", "no", "no", "no", "3", "no"])
    assert t.escalations == []


def test_post_session_expired_is_low() -> None:
    t = run("post_session", ["no", "no", "no", Expired()])
    assert t.trace[-2:] == ["low:post_session_no_response", "end:expired"]
    assert t.escalations == [("low", "post_session_no_response")]


def test_post_session_spanish_bp() -> None:
    t = run("post_session", ["si"], language="es")
    assert t.messages[-1] == (
        "Estos pueden ser signos de una subida peligrosa de la presion arterial. Llame al 911 "
        "ahora. Su equipo de Lakeside Clinic ya fue avisado."
    )
    assert t.escalations == [("critical", "bp_emergency_signs")]


# -- dissociation ------------------------------------------------------------------------------


def test_dissociation_none_full_texts() -> None:
    t = run("dissociation", ["no"])
    assert t.trace == ["question", "episodes=no", "closing", "end:completed"]
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic. Not counting the day of a treatment and the day after "
        "it, have you had episodes of feeling unreal, or detached from yourself or your "
        "surroundings? YES or NO",
        "Thank you, Ana. Your answers have been sent to your care team at Lakeside Clinic.",
    ]


@pytest.mark.parametrize(
    ("frequency", "distress", "values", "escalation"),
    [
        ("1", "0", ("once", 0), "moderate:dissociation_episodes"),
        ("once", "6", ("once", 6), "moderate:dissociation_episodes"),
        ("2", "6", ("few_times", 6), "moderate:dissociation_episodes"),
        ("a few times", "7", ("few_times", 7), "high:dissociation_severe"),
        ("1", "10", ("once", 10), "high:dissociation_severe"),
        ("3", "0", ("daily", 0), "high:dissociation_severe"),
        ("every day", "5", ("daily", 5), "high:dissociation_severe"),
    ],
)
def test_dissociation_episodes(
    frequency: str, distress: str, values: tuple[str, int], escalation: str
) -> None:
    t = run("dissociation", ["yes", frequency, distress])
    f, d = values
    assert t.trace == [
        "question",
        *qa(("episodes", True), ("frequency", f))[:-1],
        "question",
        f"distress={d}",
        escalation,
        "closing",
        "end:completed",
    ]
    reason = escalation.split(":")[1]
    assert t.summaries[reason] == (
        f"Dissociative episodes between treatments: frequency {f}, distress {d}/10."
    )
    assert t.messages[1:3] == [
        "How often has this happened? 1 Once, 2 A few times, 3 Daily",
        "How distressing were these episodes, from 0 (not at all) to 10 (extremely)?",
    ]
    assert t.messages[-1] == (
        "Thank you, Ana. Your care team at Lakeside Clinic will look at this during clinic hours "
        "and may contact "
        "you. If you ever feel unsafe, call or text 988."
    )


def test_dissociation_unanswered_details_still_moderate() -> None:
    t = run("dissociation", ["yes", "x", "x", "x", "x", "x", "x"])
    assert t.answers == {"episodes": True, "frequency": None, "distress": None}
    assert t.escalations == [("moderate", "dissociation_episodes")]
    assert t.summaries["dissociation_episodes"] == (
        "Dissociative episodes between treatments: frequency n/a, distress n/a/10."
    )


# -- substance use -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "cravings", "value", "escalations"),
    [
        ("no", "1", "none", []),
        ("no", "none", "none", []),
        ("no", "2", "mild", ["moderate:cravings"]),
        ("no", "strong", "strong", ["moderate:cravings"]),
        ("yes", "1", "none", ["high:substance_use_outside_clinic"]),
        ("yes", "3", "strong", ["high:substance_use_outside_clinic", "moderate:cravings"]),
    ],
)
def test_substance_use(used: str, cravings: str, value: str, escalations: list[str]) -> None:
    t = run("substance_use", [used, cravings])
    use_esc = ["high:substance_use_outside_clinic"] if used == "yes" else []
    crave_esc = ["moderate:cravings"] if value != "none" else []
    assert t.trace == [
        "question",
        f"used={used}",
        *use_esc,
        "question",
        f"cravings={value}",
        *crave_esc,
        "closing",
        "end:completed",
    ]
    assert [f"{s}:{r}" for s, r in t.escalations] == escalations
    if crave_esc:
        assert t.summaries["cravings"] == (
            f"Reports {value} cravings for ketamine or other drugs since the last treatment."
        )


def test_substance_use_full_texts() -> None:
    t = run("substance_use", ["no", "none"])
    assert t.messages == [
        "Hi Ana, this is Lakeside Clinic. Only your care team sees your answers. Since your last "
        "treatment, have you used ketamine, or any drug or medicine not prescribed to you, "
        "outside the clinic? YES or NO",
        "Have you had cravings for ketamine or other drugs? 1 None, 2 Mild, 3 Strong",
        "Thank you for your honesty, Ana. Your care team at Lakeside Clinic will see your "
        "answers. If you ever feel unsafe, call or text 988.",
    ]


# -- whole chains through the simulator (hand-overs resolved from the library) ----------------


def _resolve(key: str) -> Flow | None:
    return flow(key) if key in KEYS else None


def _chain(
    key: str, replies: list[str]
) -> tuple[list[str], list[tuple[str, str, str]], SimTranscript]:
    tr = simulate(flow(key), replies, context=ANA, start=NOW, resolve=_resolve)
    assert tr.unused_replies == 0
    escalations = [(k, str(e.severity), e.reason) for k, e in tr.escalations]
    return tr.flows, escalations, tr


def test_chain_phq2_to_phq9_to_cssrs() -> None:
    replies = ["3", "3", "2", "2", "2", "2", "2", "2", "1", "yes", "no", "no"]
    flows, escalations, tr = _chain("phq2", replies)
    assert flows == ["phq2", "phq9", "cssrs_screen"]
    assert escalations == [
        ("phq9", "high", "item9_positive"),
        ("phq9", "moderate", "phq9_moderately_severe"),
        ("cssrs_screen", "moderate", "cssrs_ideation"),
    ]
    scores = {k: (s.total, s.band) for k, s in tr.scores}
    assert scores == {"phq2": (6, "positive"), "phq9": (19, "moderately severe")}
    bot = [line.text for line in tr.lines if line.who == "bot"]
    assert not any(text.startswith(("1/9", "2/9")) for text in bot)
    assert str(tr.outcome) == "completed"


def test_chain_daily_mood_to_cssrs_critical() -> None:
    flows, escalations, tr = _chain("daily_mood", ["1", "2", "yes", "yes", "no", "yes", "no", "no"])
    assert flows == ["daily_mood", "cssrs_screen"]
    assert escalations == [
        ("daily_mood", "high", "item9_positive"),
        ("cssrs_screen", "critical", "cssrs_intent"),
    ]
    bot = [line.text for line in tr.lines if line.who == "bot"]
    assert bot[-1] == END_CRITICAL


def test_chain_gad2_to_gad7() -> None:
    flows, escalations, tr = _chain("gad2", ["3", "3", "3", "3", "3", "0", "0"])
    assert flows == ["gad2", "gad7"]
    assert escalations == [("gad7", "high", "gad7_severe")]
    scores = {k: (s.total, s.band) for k, s in tr.scores}
    assert scores == {"gad2": (6, "positive"), "gad7": (15, "severe")}
