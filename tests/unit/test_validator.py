"""Every class of flow problem is reported at the exact line and column of its YAML node."""

from __future__ import annotations

from typing import Any

import pytest

from flows.definition import load_flow, validate_flow_source
from flows.problems import MAX_PROBLEMS, Problem, SourceError

BASE = """\
key: check
title: Check
answer_sets:
  freq:
    type: scale
    options:
      - {value: 0, label: "Not at all"}
      - {value: 1, label: "Several days"}
scores:
  - name: total
    items: [q1, q2]
    bands:
      - {min: 0, label: low}
      - {min: 2, label: high}
    flags:
      - {name: q2_positive, when: {answer: q2, gt: 0}}
rules:
  - when: {score: total, gte: 2}
    escalate: {severity: high, reason: total_high, summary: "Total {score.total}"}
nodes:
  - id: q1
    type: ask
    text: "Hi {first_name}, q1?"
    answer: freq
    next: q2
  - id: q2
    type: ask
    text: {en: "q2?", es: "q2?"}
    answer: freq
    next:
      - when: {flag: q2_positive}
        goto: alert
      - goto: done
  - id: alert
    type: escalate
    severity: moderate
    reason: q2_positive
    summary: "q2 = {answer.q2}"
    next: done
  - id: done
    type: end
    text: "Thanks."
"""


def at(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based line and column where the ``nth`` occurrence of ``needle`` starts."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def problems(text: str, **kw: object) -> list[Problem]:
    _, found = validate_flow_source(text, **kw)  # type: ignore[arg-type]
    return found


def only_error(text: str, **kw: object) -> Problem:
    errors = [p for p in problems(text, **kw) if p.is_error]
    assert len(errors) == 1, errors
    return errors[0]


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_base_flow_is_valid() -> None:
    flow, found = validate_flow_source(BASE)
    assert flow is not None
    assert found == []


def test_unknown_key_points_at_the_key() -> None:
    text = edit("    answer: freq\n    next: q2", "    answer: freq\n    nxet: q2\n    next: q2")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "nxet")
    assert "unknown key 'nxet'" in p.message and "did you mean 'next'" in p.message


def test_wrong_type() -> None:
    text = edit("title: Check", "title: Check\nretries: many")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "many")
    assert "retries" in p.message


def test_missing_field_points_at_its_node() -> None:
    text = edit('    text: "Hi {first_name}, q1?"\n', "")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "id: q1")
    assert "missing required key 'text' in node 'q1'" in p.message


def test_unknown_node_type() -> None:
    text = edit("    type: end", "    type: finish")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "finish")
    assert "unknown type 'finish'" in p.message


def test_duplicate_node_id() -> None:
    text = edit("  - id: alert", "  - id: q1")
    errors = [p for p in problems(text) if "duplicate node id" in p.message]
    assert len(errors) == 1
    line, column = at(text, "id: q1", 1)
    assert (errors[0].line, errors[0].column) == (line, column + 4)


def test_unknown_next_target() -> None:
    text = edit("    next: q2", "    next: q3")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "q3")
    assert "unknown node 'q3'" in p.message


def test_unknown_goto_target() -> None:
    text = edit("goto: alert", "goto: alrt")
    found = [p for p in problems(text) if p.is_error]
    unknown = [p for p in found if "unknown node 'alrt'" in p.message]
    assert unknown and (unknown[0].line, unknown[0].column) == at(text, "alrt")
    assert "did you mean 'alert'" in unknown[0].message


def test_unreachable_node() -> None:
    text = edit("        goto: alert\n", "        goto: done\n")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "id: alert")
    assert "'alert' is unreachable" in p.message


def test_node_that_cannot_reach_an_end() -> None:
    text = edit(
        "  - id: done\n",
        "  - id: trap\n    type: ask\n    text: again?\n    answer: freq\n    next: trap\n"
        "  - id: done\n",
    )
    text = edit("      - goto: done", "      - goto: trap", text)
    p = only_error(text)
    assert (p.line, p.column) == at(text, "id: trap")
    assert "'trap' can never reach an end" in p.message


def test_loop_without_ask() -> None:
    text = edit(
        "  - id: done\n",
        "  - id: spin\n    type: say\n    text: hi\n    next: spin2\n"
        "  - id: spin2\n    type: branch\n    next:\n      - when: {answer: q1, eq: 0}\n"
        "        goto: spin\n      - goto: done\n  - id: done\n",
    )
    text = edit("    next: done\n  - id: spin", "    next: spin\n  - id: spin", text)
    p = only_error(text)
    assert (p.line, p.column) == at(text, "id: spin")
    assert "spin → spin2 → spin" in p.message and "never wait" in p.message


def test_route_list_without_default() -> None:
    text = edit("      - goto: done", "      - when: {answer: q1, eq: 0}\n        goto: done")
    found = [p for p in problems(text) if "last route" in p.message]
    assert len(found) == 1
    assert (found[0].line, found[0].column) == at(text, "when: {answer: q1, eq: 0}")


def test_undefined_answer_set() -> None:
    text = edit("    answer: freq\n    next: q2", "    answer: frequency\n    next: q2")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "frequency")
    assert "unknown answer set 'frequency'" in p.message


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("{answer: q2, gt: 0}", "{answer: q7, gt: 0}", "q7", "unknown answer 'q7'"),
        ("{score: total, gte: 2}", "{score: totl, gte: 2}", "totl", "unknown score 'totl'"),
        ("{flag: q2_positive}", "{flag: q2_pos}", "q2_pos}", "unknown flag 'q2_pos'"),
    ],
)
def test_conditions_name_known_things(old: str, new: str, needle: str, message: str) -> None:
    text = edit(old, new)
    p = only_error(text)
    assert (p.line, p.column) == at(text, needle)
    assert message in p.message


def test_condition_shape_errors() -> None:
    text = edit("{flag: q2_positive}", "{answer: q1}")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "{answer: q1}")
    assert "needs an operator" in p.message


def test_score_item_unknown_question() -> None:
    text = edit("items: [q1, q2]", "items: [q1, q3]")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "q3")
    assert "score item 'q3'" in p.message


def test_score_item_non_numeric_answer() -> None:
    text = edit("    answer: freq\n    next: q2", "    answer: {type: text}\n    next: q2")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "q1")  # the item in `items: [q1, q2]`
    assert "non-numeric" in p.message


def test_unknown_template_variable() -> None:
    text = edit("Hi {first_name}, q1?", "Hi {firstname}, q1?")
    p = only_error(text)
    assert (p.line, p.column) == at(text, '"Hi {firstname}')
    assert "{firstname}" in p.message


def test_template_dotted_variable_must_exist() -> None:
    text = edit('"Total {score.total}"', '"Total {score.phq9}"')
    p = only_error(text)
    assert (p.line, p.column) == at(text, '"Total {score.phq9}"')
    assert "no score named 'phq9'" in p.message


def test_stray_brace() -> None:
    text = edit('"Thanks."', '"Thanks {."')
    p = only_error(text)
    assert (p.line, p.column) == at(text, '"Thanks {."')
    assert "stray '{'" in p.message


def test_text_map_without_en() -> None:
    text = edit('{en: "q2?", es: "q2?"}', '{fr: "q2?", es: "q2?"}')
    p = only_error(text)
    assert (p.line, p.column) == at(text, "{fr:")
    assert "'en'" in p.message


def test_invalid_severity() -> None:
    text = edit("severity: moderate", "severity: urgent")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "urgent")
    assert "severity" in p.message and "'critical'" in p.message


def test_invalid_duration() -> None:
    text = edit("title: Check", "title: Check\nreminder:\n  after: 4 hours")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "4 hours")
    assert "invalid duration '4 hours'" in p.message


def test_bad_id() -> None:
    text = edit("  - id: alert", "  - id: Alert")
    found = [p for p in problems(text) if p.is_error]
    assert (found[0].line, found[0].column) == at(text, "Alert")
    assert "not a valid identifier" in found[0].message


def test_handover_to_unknown_flow() -> None:
    text = edit('    text: "Thanks."', '    text: "Thanks."\n    handover: phq99')
    p = only_error(text, known_flows={"phq9", "check"})
    assert (p.line, p.column) == at(text, "phq99")
    assert "unknown flow 'phq99'" in p.message and "phq9" in p.message
    assert not [p for p in problems(text) if p.is_error]  # no library given: not checked


def test_long_message_warning() -> None:
    text = edit('"Thanks."', '"' + "Thanks. " * 45 + '"')
    found = problems(text)
    assert [p.is_error for p in found] == [False]
    assert (found[0].line, found[0].column) == at(text, '"Thanks. Thanks.')
    assert "over 320" in found[0].message
    assert found[0].format("f.yaml").startswith(f"f.yaml:{found[0].line}:")
    assert ": warning: " in found[0].format("f.yaml")


def test_non_gsm_warning() -> None:
    text = edit('es: "q2?"', 'es: "¿Cómo está?"')
    found = problems(text)
    assert len(found) == 1 and not found[0].is_error
    assert (found[0].line, found[0].column) == at(text, '"¿Cómo')
    assert "ó" in found[0].message and "UCS-2" in found[0].message


def test_tab_indentation() -> None:
    text = edit("  - id: done\n    type: end", "  - id: done\n\ttype: end")
    p = only_error(text)
    assert (p.line, p.column) == (at(text, "\ttype")[0], 1)
    assert p.message == "tabs are not allowed for indentation; use spaces"


def test_a_number_too_long_for_python_is_a_problem_not_a_crash() -> None:
    digits = "9" * 5000
    text = edit("title: Check", f"title: Check\nretries: {digits}")
    p = only_error(text)
    assert (p.line, p.column) == at(text, digits)
    assert p.message == "number is too long; write a smaller number"


def test_loading_many_flows_keeps_memory_flat() -> None:
    """The YAML loader builds each document with its own constructor: nothing is kept
    from one load to the next."""
    import gc
    import tracemalloc

    from flows.yamlsrc import load

    for _ in range(20):  # warm every cache first
        load(BASE)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            load(BASE)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # a leak of one node per scalar would be megabytes; allow a little allocator noise
    assert after - before < 256 * 1024


def test_yaml_aliases_rejected() -> None:
    text = edit("title: Check", "title: &t Check\ndescription: *t")
    p = only_error(text)
    assert "anchors" in p.message


def test_duplicate_yaml_key() -> None:
    text = edit("title: Check", "title: Check\ntitle: Again")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "title: Again")


def test_conflicting_synonyms() -> None:
    text = edit('{value: 1, label: "Several days"}', '{value: 1, label: "not at all"}')
    p = only_error(text)
    assert (p.line, p.column) == at(text, '"not at all"')
    assert "two different answers" in p.message


def test_flag_condition_cannot_use_flags() -> None:
    text = edit("when: {answer: q2, gt: 0}", "when: {flag: q2_positive}")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "q2_positive}}")


def test_bands_ascending() -> None:
    text = edit("{min: 2, label: high}", "{min: 0, label: high}")
    p = only_error(text)
    assert (p.line, p.column) == at(text, "0, label: high")


def test_all_problems_reported_at_once_and_sorted() -> None:
    text = edit("    next: q2", "    next: q3")
    text = edit("severity: moderate", "severity: urgent", text)
    found = problems(text)
    assert len(found) == 2  # the schema error and the unknown target come in one pass
    text = edit("items: [q1, q2]", "items: [q1, q9]", edit("    next: q2", "    next: q3"))
    found = problems(text)
    assert len([p for p in found if p.is_error]) >= 2
    assert found == sorted(found, key=lambda p: (p.line, p.column, p.message))


def test_load_flow_raises_with_all_problems() -> None:
    with pytest.raises(SourceError) as info:
        load_flow(edit("    next: q2", "    next: q3"))
    assert info.value.problems and info.value.problems[0].line > 1


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "key: [", b"\xff\xfe"])
def test_unusable_documents(text: str | bytes) -> None:
    flow, found = validate_flow_source(text)
    assert flow is None and found and found[0].is_error


# -- safety questions ---------------------------------------------------------------------------


def test_a_safety_question_must_name_its_unanswered_branch() -> None:
    text = edit("    answer: freq\n    next:\n", "    answer: freq\n    safety: true\n    next:\n")
    p = only_error(text)
    assert "needs 'unanswered'" in p.message
    assert p.line == at(text, "safety: true")[0]


def test_a_safety_questions_unanswered_branch_must_escalate() -> None:
    text = edit(
        "    answer: freq\n    next:\n",
        "    answer: freq\n    safety: true\n    unanswered: done\n    next:\n",
    )
    p = only_error(text)
    assert "must escalate" in p.message and "'done'" in p.message
    ok = edit(
        "    answer: freq\n    next:\n",
        "    answer: freq\n    safety: true\n    unanswered: alert\n    next:\n",
    )
    assert [p for p in problems(ok) if p.is_error] == []


def test_unanswered_must_name_a_node() -> None:
    text = edit(
        "    answer: freq\n    next:\n", "    answer: freq\n    unanswered: alrt\n    next:\n"
    )
    p = only_error(text)
    assert "unknown node 'alrt'" in p.message and "did you mean 'alert'" in p.message


def test_affirmative_must_be_an_option_of_a_scale() -> None:
    text = edit(
        "    answer: freq\n    next:\n", "    answer: freq\n    affirmative: 7\n    next:\n"
    )
    assert "not one of the scale's option values" in only_error(text).message


def test_every_safety_question_in_the_library_escalates_when_unanswered() -> None:
    from bot.library import flow_sources
    from flows.definition import load_flow
    from flows.model import AskNode, EscalateNode

    marked = set()
    for key, source in flow_sources().items():
        flow = load_flow(source)
        nodes = {n.id: n for n in flow.nodes}
        for node in flow.nodes:
            if isinstance(node, AskNode) and node.safety:
                marked.add(f"{key}.{node.id}")
                assert isinstance(nodes[node.unanswered or ""], EscalateNode)
    assert {
        "phq9.q9",
        "daily_mood.q9",
        "post_session.bp_now",
        "post_session.bp_since",
        "post_session.q9",
        "psychosis_screen.commands",
        "cssrs_screen.intent",
    } <= marked
    assert {f"cssrs_screen.{q}" for q in ("wish_dead", "thoughts", "method", "plan")} <= marked


def test_thousands_of_unknown_keys_stop_at_the_cap_with_a_count() -> None:
    extra = "".join(f"    junk_key_{i}: 1\n" for i in range(5_000))
    text = edit('    type: ask\n    text: "Hi', "    type: ask\n" + extra + '    text: "Hi')
    found = problems(text)
    assert len(found) == MAX_PROBLEMS + 1
    assert all("unknown key" in p.message for p in found[:MAX_PROBLEMS])
    assert found[-1].message == "and 4900 more problems not shown; fix these first"
    assert found[:MAX_PROBLEMS] == sorted(found[:MAX_PROBLEMS], key=lambda p: (p.line, p.column))


def test_thousands_of_semantic_problems_stop_collecting() -> None:
    nodes = "".join(
        f'  - id: n{i}\n    type: say\n    text: "x"\n    next: nowhere_{i}\n' for i in range(400)
    )
    found = problems(BASE + nodes)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1].message == "and more problems not shown; fix these first"


def test_protocol_problems_are_capped_too() -> None:
    from flows.protocol import validate_protocol_source

    extra = "".join(f"junk_{i}: 1\n" for i in range(2_000))
    _, found = validate_protocol_source("key: p\ntitle: P\n" + extra)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1].message.startswith("and ") and "more problems not shown" in found[-1].message


async def test_drafts_are_checked_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs in a worker thread, so the loop keeps answering other requests."""
    import threading

    from bot.services import flow_admin

    seen: list[int] = []
    real = flow_admin.check_source

    def spy(*args: Any) -> list[Problem]:
        seen.append(threading.get_ident())
        return real(*args)

    class NoDatabase:
        async def execute(self, *_a: Any, **_k: Any) -> Any:
            class Rows:
                def all(self) -> list[Any]:
                    return []

            return Rows()

    monkeypatch.setattr(flow_admin, "check_source", spy)
    found = await flow_admin.validate(
        session=NoDatabase(),  # type: ignore[arg-type]
        kind="flow",
        key="check",
        source=BASE,
    )
    assert found == [] or not any(p.is_error for p in found)
    assert seen and seen[0] != threading.get_ident()


# -- references are checked in the same pass as schema errors ---------------------------------

SCHEMA_ERROR = ("severity: moderate", "severity: urgent")
"""An edit that fails the schema (no such severity) without touching any reference."""


def test_a_schema_error_and_an_unknown_next_target_come_in_one_pass() -> None:
    text = edit(*SCHEMA_ERROR, edit("    next: q2", "    next: q3"))
    flow, found = validate_flow_source(text)
    assert flow is None
    unknown = next(p for p in found if "unknown node 'q3'" in p.message)
    assert (unknown.line, unknown.column) == at(text, "q3")
    severity = next(p for p in found if "urgent" in p.message)
    assert (severity.line, severity.column) == at(text, "urgent")
    assert len(found) == 2, found
    assert found == sorted(found, key=lambda p: (p.line, p.column, p.message))


def test_unknown_goto_and_duplicate_id_are_found_beside_a_schema_error() -> None:
    text = edit(*SCHEMA_ERROR, edit("goto: alert", "goto: alrt"))
    text = edit("  - id: done", "  - id: q1", text)
    text = edit("      - goto: done", "      - goto: q1", text)
    found = problems(text)
    messages = [p.message for p in found]
    assert any("urgent" in m for m in messages), messages
    unknown = next(p for p in found if "unknown node 'alrt'" in p.message)
    assert (unknown.line, unknown.column) == at(text, "alrt")
    assert "did you mean 'alert'" in unknown.message
    duplicate = next(p for p in found if "duplicate node id 'q1'" in p.message)
    line, column = at(text, "id: q1", 1)
    assert (duplicate.line, duplicate.column) == (line, column + 4)
    assert f"first used on line {at(text, 'id: q1')[0]}" in duplicate.message


def test_the_same_messages_with_or_without_a_schema_error() -> None:
    """A reference problem reads and points the same whichever pass finds it."""
    broken = edit("goto: alert", "goto: alrt")
    alone = [p for p in problems(broken) if "alrt" in p.message]
    with_schema_error = [p for p in problems(edit(*SCHEMA_ERROR, broken)) if "alrt" in p.message]
    assert alone and [(p.line, p.column, p.message) for p in alone] == [
        (p.line, p.column, p.message) for p in with_schema_error
    ]


def test_unanswered_answer_set_and_handover_are_checked_beside_a_schema_error() -> None:
    text = edit(*SCHEMA_ERROR)
    text = edit(
        "    answer: freq\n    next:\n", "    answer: frq\n    unanswered: alrt\n    next:\n", text
    )
    text = edit('    text: "Thanks."', '    text: "Thanks."\n    handover: phq99', text)
    found = problems(text, known_flows={"phq9", "check"})
    messages = [p.message for p in found]
    assert any("urgent" in m for m in messages), messages
    assert any(m.startswith("unknown node 'alrt'") for m in messages), messages
    answer_set = next(p for p in found if p.message.startswith("unknown answer set 'frq'"))
    assert (answer_set.line, answer_set.column) == at(text, "frq")
    assert "did you mean 'freq'" in answer_set.message
    handover = next(p for p in found if "handover to unknown flow 'phq99'" in p.message)
    assert (handover.line, handover.column) == at(text, "phq99")


def test_values_of_the_wrong_shape_are_left_to_the_schema() -> None:
    """No crash and no second message when a target is not a string or not an id."""
    for bad in ("next: 12", "next: [1, {goto: 3}, {when: x}]", "next: Q3", "next: {a: b}"):
        text = edit("    next: q2", f"    {bad}")
        found = problems(text)
        assert found and all(p.is_error for p in found)
        assert not any(p.message.startswith("unknown node") for p in found), (bad, found)
    text = edit("nodes:\n", "nodes:\n  - 12\n  - [x]\n")
    assert not any(p.message.startswith("unknown node") for p in problems(text))
    assert problems("key: check\ntitle: T\nnodes: {a: 1}\n")
    assert problems("key: check\ntitle: T\nnodes: 12\nbogus: 1\n")


def test_a_target_naming_a_malformed_id_is_not_reported_as_unknown() -> None:
    """The id is what to fix; "unknown node" on every route to it would be noise."""
    text = edit("  - id: alert", "  - id: Alert")
    found = problems(text)
    assert any("not a valid identifier" in p.message for p in found)
    assert not any("unknown node" in p.message for p in found), found


def test_unknown_targets_beside_a_schema_error_stop_at_the_cap() -> None:
    nodes = "".join(
        f'  - id: n{i}\n    type: say\n    text: "x"\n    next: nowhere_{i}\n' for i in range(400)
    )
    found = problems(edit(*SCHEMA_ERROR, BASE + nodes))
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1].message == "and more problems not shown; fix these first"
    assert any("urgent" in p.message for p in found)


def test_a_flow_with_only_warnings_past_the_cap_still_loads() -> None:
    long_text = "x" * 400  # each a warning: longer than two SMS
    nodes = "".join(
        f'  - id: s{i}\n    type: say\n    text: "{long_text}"\n    next: {"s" + str(i + 1) if i < 109 else "q1"}\n'
        for i in range(110)
    )
    text = BASE.replace("nodes:\n", "nodes:\n" + nodes, 1)  # s0 becomes the first node
    flow, found = validate_flow_source(text)
    assert not any(p.is_error for p in found), [p for p in found if p.is_error][:3]
    assert len(found) == MAX_PROBLEMS + 1 and not found[-1].is_error
    assert flow is not None
