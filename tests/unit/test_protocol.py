"""Protocol language: the shipped protocols, the schema file, and one test per problem class.

Every problem test asserts the exact line and column an admin is sent to.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Collection
from datetime import time, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows import protocol as protocol_module
from flows.problems import Problem, Severity, SourceError
from flows.protocol import (
    Protocol,
    format_duration,
    load_protocol,
    protocol_json_schema,
    protocol_schema_text,
    validate_protocol_source,
)

FLOWS_DIR = Path(protocol_module.__file__).parent
PROTOCOL_DIR = FLOWS_DIR / "library" / "protocols"
SCHEMA_FILE = FLOWS_DIR / "schema" / "protocol.schema.json"
LIBRARY_FLOWS = frozenset(
    {
        "phq2",
        "phq9",
        "gad2",
        "gad7",
        "cssrs_screen",
        "post_session",
        "dissociation",
        "substance_use",
        "daily_mood",
        "mania_screen",
        "psychosis_screen",
        "bladder_screen",
        "alcohol_sedatives",
    }
)
SHIPPED = (
    "ketamine_induction",
    "esketamine_induction",
    "esketamine_maintenance",
    "maintenance_monthly",
    "relapse_watch",
)


def errors(text: str, known_flows: Collection[str] | None = None) -> list[Problem]:
    protocol, problems = validate_protocol_source(textwrap.dedent(text), known_flows=known_flows)
    found = [p for p in problems if p.is_error]
    assert protocol is None if found else protocol is not None
    return found


def at(problems: list[Problem]) -> list[tuple[int, int]]:
    return [(p.line, p.column) for p in problems]


HEAD = """\
key: demo
title: Demo
"""


# --- shipped protocols and schema ----------------------------------------------------------


@pytest.mark.parametrize("key", SHIPPED)
def test_shipped_protocol_is_valid_and_named_after_its_file(key: str) -> None:
    text = (PROTOCOL_DIR / f"{key}.yaml").read_text("utf-8")
    protocol, problems = validate_protocol_source(text, known_flows=LIBRARY_FLOWS)
    assert problems == []
    assert protocol is not None
    assert protocol.key == key
    # the relapse watch starts when treatments have stopped; every other one follows them
    assert protocol.supersede_on_new_treatment is (key != "relapse_watch")


def test_exactly_the_shipped_protocols_are_shipped() -> None:
    assert sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("key", SHIPPED)
def test_protocol_round_trips_through_json(key: str) -> None:
    protocol = load_protocol((PROTOCOL_DIR / f"{key}.yaml").read_text("utf-8"))
    for dumped in (
        protocol.model_dump(mode="json"),
        protocol.model_dump(mode="json", exclude_unset=True),
        json.loads(protocol.model_dump_json()),
    ):
        again = Protocol.model_validate(dumped)
        assert again == protocol
        assert [again.windows(i) for i in again.checkins] == [
            protocol.windows(i) for i in protocol.checkins
        ]


def test_dump_keeps_an_inherited_reminder_inherited_and_a_null_one_null() -> None:
    protocol = load_protocol(
        HEAD
        + "checkins:\n  - {flow: a, after: treatment}\n  - {flow: b, after: treatment, reminder: null}\n"
    )
    inherited, none = protocol.model_dump(mode="json")["checkins"]
    assert "reminder" not in inherited and "expiry" not in inherited
    assert none["reminder"] is None
    again = Protocol.model_validate(protocol.model_dump(mode="json"))
    assert [again.windows(i).reminder for i in again.checkins] == [timedelta(hours=4), None]


def test_shipped_schema_file_is_the_generated_one() -> None:
    expected = protocol_schema_text()
    assert SCHEMA_FILE.read_text("utf-8") == expected, (
        "flows/schema/protocol.schema.json is stale; regenerate it with: "
        ".venv/bin/python -c 'from flows.protocol import protocol_schema_text as t; "
        'print(t(), end="")\' > flows/schema/protocol.schema.json'
    )


def test_schema_describes_the_yaml_spelling() -> None:
    schema = protocol_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    windows = schema["$defs"]["Windows"]["properties"]
    assert windows["reminder"]["default"] == "4h"
    assert windows["expiry"]["default"] == "1d"
    item = schema["$defs"]["CheckinItem"]["properties"]
    assert "default" not in item["reminder"]  # absent means "the protocol's default"
    assert item["expiry"]["type"] == "string"  # never null
    assert schema["$defs"]["Recurring"]["properties"]["count"]["minimum"] == 1


# --- the model's meaning -----------------------------------------------------------------


def test_windows_item_overrides_then_defaults() -> None:
    protocol = load_protocol(
        HEAD
        + textwrap.dedent(
            """\
            defaults: {reminder: 2h, expiry: 12h}
            checkins:
              - {flow: a, after: treatment, offset: 1d}
              - {flow: b, after: treatment, offset: 1d, reminder: null}
              - {flow: c, after: treatment, offset: 1d, reminder: 1h, expiry: 3h}
              - {flow: d, after: treatment, offset: 1d, expiry: 1d}
            """
        )
    )
    got = [(w.reminder, w.expiry) for w in map(protocol.windows, protocol.checkins)]
    h = timedelta(hours=1)
    assert got == [(2 * h, 12 * h), (None, 12 * h), (h, 3 * h), (2 * h, 24 * h)]


def test_defaults_default_to_four_and_twenty_four_hours() -> None:
    protocol = load_protocol(HEAD + "checkins: [{flow: a, after: enrollment}]\n")
    assert protocol.defaults.reminder == timedelta(hours=4)
    assert protocol.defaults.expiry == timedelta(hours=24)
    assert protocol.supersede_on_new_treatment is False
    assert protocol.checkins[0].offset is None


def test_values_are_parsed() -> None:
    protocol = load_protocol(
        HEAD
        + textwrap.dedent(
            """\
            checkins:
              - {flow: a, after: treatment, offset: 2d, at: "9:05"}
              - flow: b
                recurring: {every: 2w, weekday: sunday, at: "23:59", count: 3}
            """
        )
    )
    one, rec = protocol.checkins
    assert (one.offset, one.at) == (timedelta(days=2), time(9, 5))
    assert rec.recurring is not None
    assert rec.recurring.every == timedelta(weeks=2)
    assert (rec.recurring.weekday, rec.recurring.at, rec.recurring.count) == (
        "sunday",
        time(23, 59),
        3,
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30m", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1w2d3h4m", timedelta(weeks=1, days=2, hours=3, minutes=4)),
        ("366d", timedelta(days=366)),
    ],
)
def test_parse_duration_accepts(text: str, value: timedelta) -> None:
    assert protocol_module._parse_duration(text) == value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "write a number and a unit"),
        ("24", "write a number and a unit"),
        ("h", "write a number and a unit"),
        ("1m1h", "write a number and a unit"),  # units in order only
        ("1h ", "write a number and a unit"),
        ("1h\n", "write a number and a unit"),
        ("-1h", "write a number and a unit"),
        ("١h", "write a number and a unit"),  # ASCII digits only
        ("0h", "longer than zero"),
        ("0w0m", "longer than zero"),
        ("367d", "at most 366d"),
        ("99999999999w", "at most 366d"),
    ],
)
def test_parse_duration_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        protocol_module._parse_duration(text)


@pytest.mark.parametrize("text", ["30m", "4h", "1d", "2w", "1h30m", "1w2d3h4m"])
def test_format_duration_inverts_parse(text: str) -> None:
    assert format_duration(protocol_module._parse_duration(text)) == text


def test_models_are_frozen() -> None:
    protocol = load_protocol(HEAD + "checkins: [{flow: a, after: enrollment}]\n")
    with pytest.raises(ValidationError):
        protocol.key = "other"  # type: ignore[misc]


def test_model_validate_applies_the_same_cross_checks() -> None:
    with pytest.raises(ValidationError, match="must be longer than reminder"):
        Protocol.model_validate(
            {
                "key": "x",
                "title": "X",
                "checkins": [{"flow": "a", "after": "treatment", "reminder": "1d"}],
            }
        )


# --- one test per problem class, exact line:column -----------------------------------------


def test_unknown_key_top_level_points_at_the_key() -> None:
    found = errors(HEAD + "checkin: []\ncheckins: [{flow: a, after: treatment}]\n")
    assert at(found) == [(3, 1)]
    assert found[0].message == (
        "protocol: unknown key 'checkin'; expected one of: key, title, description, "
        "supersede_on_new_treatment, defaults, checkins"
    )


def test_unknown_key_nested_lists_the_allowed_keys() -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            """\
            checkins:
              - flow: phq9
                recurring:
                  every: 1w
                  weekday: monday
                  at: "10:00"
                  times: 6
            """
        )
    )
    assert at(found) == [(9, 7)]
    assert found[0].message == (
        "checkins[0].recurring: unknown key 'times'; expected one of: every, weekday, at, count"
    )
    assert found[0].path == "checkins.0.recurring.times"


def test_wrong_type_points_at_the_value() -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            """\
            supersede_on_new_treatment: sometimes
            checkins:
              - flow: [phq9]
                after: treatment
            """
        )
    )
    assert at(found) == [(3, 29), (5, 11)]
    assert found[0].message == (
        "supersede_on_new_treatment: expected true or false, got 'sometimes'"
    )
    assert found[1].message == "checkins[0].flow: expected a string, got a list"


def test_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    found = errors(
        textwrap.dedent(
            """\
            key: demo
            checkins:
              - flow: phq9
                recurring:
                  every: 1w
                  at: "10:00"
            """
        )
    )
    assert at(found) == [(1, 1), (5, 7)]
    assert found[0].message == "protocol: missing required key 'title'"
    assert found[1].message == "checkins[0].recurring: missing required key 'weekday'"


@pytest.mark.parametrize(
    ("value", "column", "message"),
    [
        (
            "24x",
            13,
            "invalid duration '24x': write a number and a unit, e.g. 30m, 4h, 1d, 2w or 1h30m",
        ),
        ("0h", 13, "invalid duration '0h': it must be longer than zero"),
        ("24", 13, "24 has no unit: write e.g. 24h or 24m (m is minutes)"),
        ('"400d"', 13, "invalid duration '400d': it must be at most 366d"),
    ],
)
def test_invalid_duration(value: str, column: int, message: str) -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            f"""\
            checkins:
              - flow: post_session
                after: treatment
                offset: {value}
            """
        )
    )
    assert at(found) == [(6, column)]
    assert found[0].message == f"checkins[0].offset: {message}"


def test_invalid_duration_in_defaults() -> None:
    found = errors(
        HEAD + "defaults: {reminder: 4 hours}\ncheckins: [{flow: a, after: enrollment}]\n"
    )
    assert at(found) == [(3, 22)]
    assert found[0].message.startswith("defaults.reminder: invalid duration '4 hours'")


def test_recurring_interval_must_be_whole_weeks() -> None:
    found = errors(
        HEAD
        + 'checkins:\n  - flow: phq9\n    recurring: {every: 10d, weekday: monday, at: "10:00"}\n'
    )
    assert at(found) == [(5, 24)]
    assert "every 1w3d is not whole weeks" in found[0].message


def test_invalid_weekday() -> None:
    found = errors(
        HEAD
        + 'checkins:\n  - flow: phq9\n    recurring: {every: 1w, weekday: Monday, at: "10:00"}\n'
    )
    assert at(found) == [(5, 37)]
    assert found[0].message == (
        "checkins[0].recurring.weekday: 'Monday' is not valid; expected 'monday', 'tuesday', "
        "'wednesday', 'thursday', 'friday', 'saturday' or 'sunday'"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"25:00"', "invalid time '25:00': write a 24-hour local time, e.g. \"10:00\""),
        ('"10:60"', "invalid time '10:60': write a 24-hour local time, e.g. \"10:00\""),
        ('"10am"', "invalid time '10am': write a 24-hour local time, e.g. \"10:00\""),
        (
            "10:00",  # YAML 1.1 reads this as the number 600
            'write the time in quotes, e.g. "10:00" '
            "(YAML reads an unquoted time such as 10:00 as a number)",
        ),
    ],
)
def test_invalid_time(value: str, message: str) -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            f"""\
            checkins:
              - flow: phq9
                recurring:
                  every: 1w
                  weekday: monday
                  at: {value}
            """
        )
    )
    assert at(found) == [(8, 11)]
    assert found[0].message == f"checkins[0].recurring.at: {message}"


def test_invalid_time_on_a_one_off() -> None:
    found = errors(HEAD + "checkins:\n  - {flow: a, after: treatment, offset: 1d, at: '7'}\n")
    assert at(found) == [(4, 49)]
    assert found[0].path == "checkins.0.at"


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("-2", "-2")])
def test_count_below_one(value: str, shown: str) -> None:
    found = errors(
        HEAD
        + f'checkins:\n  - flow: phq9\n    recurring: {{every: 1w, weekday: monday, at: "10:00", count: {value}}}\n'
    )
    assert at(found) == [(5, 65)]
    assert found[0].message == (
        f"checkins[0].recurring.count: must be at least 1 (got {shown}); "
        "omit it to repeat indefinitely"
    )


def test_count_must_be_a_whole_number() -> None:
    found = errors(
        HEAD
        + 'checkins:\n  - flow: phq9\n    recurring: {every: 1w, weekday: monday, at: "10:00", count: 6.5}\n'
    )
    assert at(found) == [(5, 65)]
    assert found[0].message == "checkins[0].recurring.count: expected a whole number, got 6.5"


def test_both_after_and_recurring_points_at_recurring() -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            """\
            checkins:
              - flow: phq9
                after: enrollment
                recurring: {every: 1w, weekday: monday, at: "10:00"}
            """
        )
    )
    assert at(found) == [(6, 5)]
    assert found[0].message == (
        "checkins[0].recurring: a check-in is either one-off (`after`) or `recurring`, "
        "not both; write two check-ins"
    )


def test_neither_after_nor_recurring_points_at_the_item() -> None:
    found = errors(HEAD + "checkins:\n  - flow: phq9\n    offset: 1d\n")
    assert at(found) == [(4, 5)]
    assert found[0].message == (
        "checkins[0]: a check-in needs `after: treatment`, `after: enrollment` or `recurring`"
    )


def test_one_off_keys_on_a_recurring_item() -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            """\
            checkins:
              - flow: phq9
                recurring: {every: 1w, weekday: monday, at: "10:00"}
                at: "11:00"
            """
        )
    )
    assert at(found) == [(6, 5)]
    assert "`at` is for one-off check-ins" in found[0].message


def test_at_needs_whole_day_offset() -> None:
    found = errors(HEAD + "checkins:\n  - {flow: a, after: treatment, offset: 36h, at: '10:00'}\n")
    assert at(found) == [(4, 41)]
    assert found[0].message == (
        "checkins[0].offset: with `at`, offset must be whole days (e.g. 1d), not 1d12h"
    )


def test_expiry_not_after_reminder_on_an_item() -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            """\
            checkins:
              - flow: post_session
                after: treatment
                offset: 24h
                reminder: 6h
                expiry: 6h
            """
        )
    )
    assert at(found) == [(8, 5)]
    assert found[0].message == (
        "checkins[0].expiry: expiry (6h) must be longer than reminder (6h): "
        "a reminder after expiry is never sent"
    )


def test_item_reminder_against_default_expiry_blames_the_reminder() -> None:
    found = errors(
        HEAD
        + "defaults: {expiry: 8h}\ncheckins:\n  - {flow: a, after: treatment}\n  - {flow: b, after: treatment, reminder: 12h}\n"
    )
    assert at(found) == [(6, 33)]
    assert found[0].path == "checkins.1.reminder"


def test_expiry_not_after_reminder_in_defaults() -> None:
    found = errors(
        HEAD
        + "defaults:\n  reminder: 1d\n  expiry: 12h\ncheckins: [{flow: a, after: enrollment}]\n"
    )
    assert at(found) == [(5, 3)]
    assert found[0].message.startswith(
        "defaults.expiry: expiry (12h) must be longer than reminder (1d)"
    )


def test_window_problems_are_reported_alongside_other_problems() -> None:
    found = errors(
        HEAD
        + textwrap.dedent(
            """\
            checkins:
              - {flow: a, after: treatment, offset: 1x}
              - {flow: b, after: treatment, reminder: 2d}
            """
        )
    )
    assert at(found) == [(4, 41), (5, 33)]


def test_expiry_longer_than_the_interval() -> None:
    found = errors(
        HEAD
        + 'checkins:\n  - flow: phq9\n    recurring: {every: 1w, weekday: monday, at: "10:00"}\n    expiry: 8d\n'
    )
    assert at(found) == [(6, 5)]
    assert (
        "expiry (1w1d) is longer than the interval (1w): occurrences would overlap"
        in found[0].message
    )


def test_expiry_cannot_be_null() -> None:
    found = errors(HEAD + "checkins:\n  - {flow: a, after: treatment, expiry: null}\n")
    assert at(found) == [(4, 41)]
    assert "every check-in must expire" in found[0].message


def test_unknown_flow_only_with_known_flows() -> None:
    text = (
        HEAD
        + "checkins:\n  - flow: phq9\n    after: enrollment\n  - flow: phq_9\n    after: enrollment\n"
    )
    assert errors(text) == []
    found = errors(text, known_flows=LIBRARY_FLOWS)
    assert at(found) == [(6, 11)]
    assert found[0].message == "checkins[1].flow: unknown flow 'phq_9'; check the flow's key"


def test_invalid_key_and_empty_title() -> None:
    found = errors('key: Ketamine Induction\ntitle: ""\ncheckins: [{flow: a, after: enrollment}]\n')
    assert at(found) == [(1, 6), (2, 8)]
    assert found[0].message.startswith("key: 'Ketamine Induction' is not a valid key")
    assert found[1].message == "title: must not be empty"


def test_checkins_must_not_be_empty() -> None:
    found = errors(HEAD + "checkins: []\n")
    assert at(found) == [(3, 11)]
    assert found[0].message == "checkins: must not be empty"


def test_document_must_be_a_mapping() -> None:
    found = errors("- a\n- b\n")
    assert at(found) == [(1, 1)]
    assert found[0].message == "protocol: expected a mapping of keys to values, got a list"


def test_yaml_problems_pass_through() -> None:
    found = errors(HEAD + "title: Again\ncheckins: [{flow: a, after: enrollment}]\n")
    assert at(found) == [(3, 1)]
    assert found[0].message == "duplicate key 'title'"


def test_all_problems_are_reported_in_source_order() -> None:
    found = errors(
        textwrap.dedent(
            """\
            key: demo
            title: Demo
            extra: 1
            checkins:
              - {flow: a, after: tomorrow}
              - {flow: b, recurring: {every: 1w, weekday: funday, at: "10:00"}}
            """
        )
    )
    assert at(found) == [(3, 1), (5, 22), (6, 47)]


def test_time_in_default_quiet_hours_is_a_warning() -> None:
    text = (
        HEAD
        + 'checkins:\n  - flow: phq9\n    recurring: {every: 1w, weekday: friday, at: "22:30"}\n'
    )
    protocol, problems = validate_protocol_source(text)
    assert protocol is not None
    assert at(problems) == [(5, 49)]
    assert problems[0].severity is Severity.WARNING
    assert problems[0].message == (
        "checkins[0].recurring.at: 22:30 is inside the default quiet hours (21:00-08:00); "
        "patients with default quiet hours get it at 08:00"
    )


def test_load_protocol_raises_source_error_with_every_error() -> None:
    with pytest.raises(SourceError) as info:
        load_protocol(
            HEAD + "checkins:\n  - {flow: a, after: soon}\n  - {flow: B, after: treatment}\n"
        )
    assert at(info.value.problems) == [(4, 22), (5, 12)]


def test_load_protocol_ignores_warnings() -> None:
    protocol = load_protocol(
        HEAD + "checkins:\n  - {flow: a, after: treatment, offset: 1d, at: '06:00'}\n"
    )
    assert protocol.checkins[0].at == time(6, 0)


def test_the_example_in_the_docs_is_valid() -> None:
    docs = (FLOWS_DIR.parent / "docs" / "protocols.md").read_text("utf-8")
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    protocol, problems = validate_protocol_source(example, known_flows=LIBRARY_FLOWS)
    assert problems == []
    assert protocol is not None
