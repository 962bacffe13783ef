"""Properties over any reply sequence: no crash, bounded length, sane scores, JSON-stable state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.library import flow_sources
from flows.definition import load_flow
from flows.engine import (
    MAX_STEPS,
    Context,
    ConversationState,
    Expired,
    Input,
    ReminderDue,
    Reply,
    ScoreComputed,
    compiled,
    resume,
    start,
)
from flows.model import AnswerSpec, AskNode, ChoiceSpec, Flow, IntegerSpec, ScaleSpec, YesNoSpec
from flows.parsing import make_parser
from flows.problems import SourceError
from tests.unit.test_engine import TEST_FLOWS

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _all_flows() -> dict[str, Flow]:
    out = {name: load_flow(text) for name, text in TEST_FLOWS.items()}
    for key, text in flow_sources().items():
        try:
            out[f"library:{key}"] = load_flow(text)
        except SourceError:
            continue
    return out


FLOWS = _all_flows()
NAMES = sorted(FLOWS)

replies = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "3",
            "4",
            "7",
            "yes",
            "no",
            "ok",
            "2 or 3",
            "several days",
            "ten",
            "meh",
            "",
        ]
    ),
    st.text(max_size=40),
)
inputs: st.SearchStrategy[Input] = st.one_of(
    replies.map(Reply),
    st.just(ReminderDue()),
)


def _bound(flow: Flow) -> int:
    """Replies after which the conversation must have ended."""
    asks = [n for n in flow.nodes if isinstance(n, AskNode)]
    retries = max([flow.retries, *(n.retries or 0 for n in asks)])
    if _ask_cycle(flow):
        return MAX_STEPS
    return len(asks) * (retries + 1)


def _ask_cycle(flow: Flow) -> bool:
    edges: dict[str, set[str]] = {}
    for node in flow.nodes:
        nxt = getattr(node, "next", None)
        targets = [] if nxt is None else [nxt] if isinstance(nxt, str) else [r.goto for r in nxt]
        edges[node.id] = set(targets)
    seen: set[str] = set()
    stack: set[str] = set()

    def visit(n: str) -> bool:
        if n in stack:
            return True
        if n in seen:
            return False
        seen.add(n)
        stack.add(n)
        found = any(visit(t) for t in edges[n])
        stack.discard(n)
        return found

    return any(visit(n) for n in list(edges))


def _range(spec: AnswerSpec) -> tuple[float, float]:
    if isinstance(spec, ScaleSpec):
        values = [o.value for o in spec.options]
        return min(values), max(values)
    if isinstance(spec, IntegerSpec):
        return spec.min, spec.max
    if isinstance(spec, YesNoSpec):
        return 0, 1
    if isinstance(spec, ChoiceSpec):
        nums = [o.value for o in spec.options if isinstance(o.value, int)]
        return min(nums), max(nums)
    raise AssertionError("not numeric")


def _score_bounds(flow: Flow, name: str) -> tuple[float, float]:
    c = compiled(flow)
    by_key = {n.answer_key: c.specs[n.id] for n in flow.nodes if isinstance(n, AskNode)}
    score = c.scores[name]
    ranges = [_range(by_key[item]) for item in score.items]
    return sum(r[0] for r in ranges), sum(r[1] for r in ranges)


SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(name=st.sampled_from(NAMES), script=st.lists(replies, min_size=1, max_size=12))
def test_every_flow_ends_within_bound(name: str, script: list[str]) -> None:
    flow = FLOWS[name]
    step = start(flow, Context("Ana"), NOW)
    limit = _bound(flow)
    n = 0
    while step.state.active:
        assert n <= limit, f"{name} still active after {n} replies"
        step = resume(flow, step.state, Reply(script[n % len(script)]), NOW)
        n += 1
        for event in step.events:
            if isinstance(event, ScoreComputed):
                low, high = _score_bounds(flow, event.name)
                assert low - 1e-9 <= event.total <= high + 1e-9
                assert 0 <= event.answered <= event.items


@SLOW
@given(
    name=st.sampled_from(NAMES),
    script=st.lists(inputs, max_size=15),
    lang=st.sampled_from(["en", "es", "fr"]),
    expire=st.booleans(),
)
def test_json_round_trip_gives_identical_results(
    name: str, script: list[Input], lang: str, expire: bool
) -> None:
    flow = FLOWS[name]
    step = start(flow, Context("Ana", language=lang, clinic_name="C"), NOW)
    for item in [*script, *([Expired()] if expire else [])]:
        data = json.loads(json.dumps(step.state.to_json()))
        restored = ConversationState.from_json(data)
        assert restored == step.state
        direct = resume(flow, step.state, item, NOW)
        again = resume(flow, restored, item, NOW)
        assert direct == again
        step = direct
    if expire:
        assert not step.state.active


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), name=st.sampled_from(NAMES))
def test_no_reply_text_raises(text: str, name: str) -> None:
    flow = FLOWS[name]
    c = compiled(flow)
    for node_id, spec in c.specs.items():
        for lang in ("en", "es"):
            make_parser(spec, lang)(text)
        del node_id
    step = start(flow, Context("Ana"), NOW)
    resume(flow, step.state, Reply(text), NOW)


@pytest.mark.parametrize("name", NAMES)
def test_flow_loads_and_starts(name: str) -> None:
    step = start(FLOWS[name], Context("Ana"), NOW)
    assert step.events
