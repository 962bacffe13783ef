"""Protocols: which check-in flows a patient gets, and when (see ``docs/protocols.md``).

A protocol is untrusted admin-edited YAML, like a flow. The models below are
the single definition of its shape: they validate it, they produce the JSON
Schema shipped for editors, and the scheduler (``flows.schedule``) reads them.
Every problem is reported with the line and column of the YAML node it is
about, including cross-field ones (``expiry`` not after ``reminder``), which
is why the custom errors carry the path of the field they blame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import time, timedelta
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from flows import yamlsrc
from flows.problems import MAX_PROBLEMS, Problem, Severity, SourceError, capped

KEY_PATTERN = r"^[a-z][a-z0-9_]*$"
DURATION_SCHEMA_PATTERN = r"^(?=[0-9])([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?$"
TIME_SCHEMA_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"
MAX_DURATION = timedelta(days=366)
DEFAULT_REMINDER = timedelta(hours=4)
DEFAULT_EXPIRY = timedelta(hours=24)
DEFAULT_QUIET = (time(21, 0), time(8, 0))
"""The default quiet hours (21:00-08:00 local); used only for the validator's warning."""

WEEKDAYS: dict[str, int] = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
Anchor = Literal["treatment", "enrollment"]

_DURATION = re.compile(r"([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?")
_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
}
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})")

# Custom errors carry ``problems``: (path relative to the failing model, point at
# the key rather than the value, message). One model can blame several fields.
_Blame = tuple[tuple[str | int, ...], bool, str]
_ERROR_TYPE = "protocol"


def _fail(*problems: _Blame) -> PydanticCustomError:
    return PydanticCustomError(
        _ERROR_TYPE,
        "{message}",
        {"message": "; ".join(p[2] for p in problems), "problems": problems},
    )


def _parse_duration(text: str) -> timedelta:
    """Parse ``30m``/``4h``/``1d``/``2w``/``1h30m``; raise ``ValueError`` saying how to fix it.

    Private on purpose: ``flows.durations`` is the shared parser; this copy has
    the same grammar and exists only so the two could be written in parallel.
    """
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(
            f"invalid duration {text!r}: write a number and a unit, e.g. 30m, 4h, 1d, 2w or 1h30m"
        )
    total = timedelta()
    for part in match.groups():
        if part is None:
            continue
        if len(part) > 7:  # keeps timedelta arithmetic far from overflow
            raise ValueError(f"invalid duration {text!r}: it must be at most 366d")
        total += int(part[:-1]) * _UNITS[part[-1]]
    if total <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    if total > MAX_DURATION:
        raise ValueError(f"invalid duration {text!r}: it must be at most 366d")
    return total


def format_duration(value: timedelta) -> str:
    """The canonical duration string for ``value`` (whole minutes): ``1d``, ``1h30m``."""
    minutes = int(value.total_seconds() // 60)
    out: list[str] = []
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60), ("m", 1)):
        count, minutes = divmod(minutes, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0m"


def _duration_input(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0) or value > MAX_DURATION or value % timedelta(minutes=1):
            raise _fail(
                ((), False, "a duration must be whole minutes, longer than zero, at most 366d")
            )
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(((), False, "expected a duration such as 30m, 4h, 1d or 2w"))
    if isinstance(value, int):
        raise _fail(
            ((), False, f"{value} has no unit: write e.g. {value}h or {value}m (m is minutes)")
        )
    try:
        return _parse_duration(value)
    except ValueError as exc:
        raise _fail(((), False, str(exc))) from None


def _time_input(value: Any) -> time:
    if isinstance(value, time):
        if value.tzinfo is not None or value.second or value.microsecond:
            raise _fail(
                ((), False, "a local time is whole minutes without a zone (the patient's applies)")
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        hours, minutes = divmod(value, 60)
        raise _fail(
            (
                (),
                False,
                f'write the time in quotes, e.g. "{hours:02d}:{minutes:02d}" '
                "(YAML reads an unquoted time such as 10:00 as a number)",
            )
        )
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise _fail(
            ((), False, f'invalid time {value!r}: write a 24-hour local time, e.g. "10:00"')
        )
    return time(int(match[1]), int(match[2]))


def _whole_weeks(value: timedelta) -> timedelta:
    if value % timedelta(weeks=1):
        raise _fail(
            (
                (),
                False,
                f"every {format_duration(value)} is not whole weeks: a recurring check-in falls "
                "on a weekday, so write 1w, 2w, 4w, ...",
            )
        )
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_input),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_SCHEMA_PATTERN,
            "description": "weeks, days, hours, minutes in that order: 30m, 4h, 1d, 2w, 1h30m",
        }
    ),
]
"""A positive duration of at most 366 days, written ``30m``, ``4h``, ``1d``, ``2w``, ``1h30m``."""

Weeks = Annotated[
    timedelta,
    BeforeValidator(_duration_input),
    AfterValidator(_whole_weeks),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]+w$",
            "description": "whole weeks: 1w, 2w, 4w",
        }
    ),
]

LocalTime = Annotated[
    time,
    BeforeValidator(_time_input),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": TIME_SCHEMA_PATTERN,
            "description": 'a 24-hour local time in the patient\'s zone, quoted: "10:00"',
        }
    ),
]

Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=64)]


def _drop_default(schema: dict[str, Any]) -> None:
    """Hide the ``null`` default of fields whose absence means "use the protocol's defaults"."""
    schema.pop("default", None)


def _not_nullable(schema: dict[str, Any]) -> None:
    """``expiry`` may be omitted but never null: every check-in must end."""
    schema.pop("default", None)
    options = schema.pop("anyOf", None)
    if options is not None:
        inner = next(o for o in options if o.get("type") != "null")
        schema.update({k: v for k, v in inner.items() if k not in schema})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Windows(_Model):
    """When a reminder goes out and when the check-in expires, both after it is sent."""

    reminder: Duration | None = Field(
        default=DEFAULT_REMINDER,
        description="after the check-in is sent, one reminder if unanswered; null for none",
        json_schema_extra={"default": format_duration(DEFAULT_REMINDER)},
    )
    expiry: Duration = Field(
        default=DEFAULT_EXPIRY,
        description="after the check-in is sent, it expires unfinished; longer than reminder",
        json_schema_extra={"default": format_duration(DEFAULT_EXPIRY)},
    )

    @model_validator(mode="after")
    def _expiry_after_reminder(self) -> Windows:
        if self.reminder is not None and self.expiry <= self.reminder:
            raise _fail(
                (
                    ("expiry",),
                    True,
                    f"expiry ({format_duration(self.expiry)}) must be longer than reminder "
                    f"({format_duration(self.reminder)}): a reminder after expiry is never sent",
                )
            )
        return self


class Recurring(_Model):
    """Every N weeks on a weekday at a local time, from the enrollment's start."""

    every: Weeks = Field(description="whole weeks between occurrences: 1w, 2w, 4w")
    weekday: Weekday
    at: LocalTime
    count: int | None = Field(
        default=None,
        description="number of occurrences; omit or null to repeat indefinitely",
        json_schema_extra={"minimum": 1},
    )

    @field_validator("count")
    @classmethod
    def _positive_count(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise _fail(
                ((), False, f"must be at least 1 (got {value}); omit it to repeat indefinitely")
            )
        return value


class CheckinItem(_Model):
    """One entry of ``checkins``: a one-off (``after``) or a ``recurring`` check-in."""

    flow: Key = Field(description="the key of the flow to run")
    after: Anchor | None = Field(
        default=None, description="one-off: counted from each treatment or from enrollment"
    )
    offset: Duration | None = Field(
        default=None, description="one-off: delay after the anchor; omit for at the anchor"
    )
    at: LocalTime | None = Field(
        default=None,
        description="one-off: local time on the day `offset` (whole days) lands on",
    )
    recurring: Recurring | None = None
    reminder: Duration | None = Field(
        default=None,
        description="overrides defaults.reminder; null for no reminder",
        json_schema_extra=_drop_default,
    )
    expiry: Duration | None = Field(
        default=None, description="overrides defaults.expiry", json_schema_extra=_not_nullable
    )

    @model_serializer(mode="wrap")
    def _omit_inherited_windows(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave out windows the item inherits, so a dump loads back to the same meaning.

        An omitted ``reminder`` means the protocol's default but ``null`` means
        none; dumping an inherited one as ``null`` would switch the reminder off.
        """
        data: dict[str, Any] = handler(self)
        if "reminder" not in self.model_fields_set:
            data.pop("reminder", None)
        if self.expiry is None:
            data.pop("expiry", None)
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> CheckinItem:
        blame: list[_Blame] = []
        if self.recurring is not None:
            if self.after is not None:
                blame.append(
                    (
                        ("recurring",),
                        True,
                        "a check-in is either one-off (`after`) or `recurring`, not both; "
                        "write two check-ins",
                    )
                )
            else:
                blame.extend(
                    (
                        (name,),
                        True,
                        f"`{name}` is for one-off check-ins; a recurring check-in sets its time "
                        "in `recurring.at`",
                    )
                    for name in ("offset", "at")
                    if getattr(self, name) is not None
                )
        elif self.after is None:
            blame.append(
                (
                    (),
                    False,
                    "a check-in needs `after: treatment`, `after: enrollment` or `recurring`",
                )
            )
        if (
            self.after is not None
            and self.at is not None
            and self.offset is not None
            and self.offset % timedelta(days=1)
        ):
            blame.append(
                (
                    ("offset",),
                    False,
                    f"with `at`, offset must be whole days (e.g. 1d), not {format_duration(self.offset)}",
                )
            )
        if "expiry" in self.model_fields_set and self.expiry is None:
            blame.append(
                (("expiry",), False, "expiry cannot be null: every check-in must expire; omit it")
            )
        if blame:
            raise _fail(*blame)
        return self


class Protocol(_Model):
    """Which flows a patient gets and when; the root of a protocol YAML file."""

    key: Key
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str = ""
    supersede_on_new_treatment: bool = Field(
        default=False,
        description="a new treatment cancels not-yet-sent check-ins planned from the previous one",
    )
    defaults: Windows = Field(default_factory=Windows)
    checkins: list[CheckinItem] = Field(min_length=1, max_length=100)

    def windows(self, item: CheckinItem) -> Windows:
        """The item's reminder and expiry: its own where it sets them, else the defaults."""
        return _windows(self.defaults, item)

    @model_validator(mode="after")
    def _check_windows(self) -> Protocol:
        blame = _window_blame(self.defaults, enumerate(self.checkins))
        if blame:
            raise _fail(*blame)
        return self


def _windows(defaults: Windows, item: CheckinItem) -> Windows:
    return Windows.model_construct(
        reminder=item.reminder if "reminder" in item.model_fields_set else defaults.reminder,
        expiry=item.expiry if item.expiry is not None else defaults.expiry,
    )


def _window_blame(defaults: Windows, items: Iterable[tuple[int, CheckinItem]]) -> list[_Blame]:
    """Cross-checks of each item's effective windows; blames the field the item sets."""
    blame: list[_Blame] = []
    for index, item in items:
        w = _windows(defaults, item)
        here: tuple[str | int, ...] = ("checkins", index)
        if w.reminder is not None and w.expiry <= w.reminder:
            # the item sets at least one of the two: the defaults were checked on their own
            field = "expiry" if item.expiry is not None else "reminder"
            blame.append(
                (
                    (*here, field),
                    True,
                    f"expiry ({format_duration(w.expiry)}) must be longer than reminder "
                    f"({format_duration(w.reminder)}): a reminder after expiry is never sent",
                )
            )
        if item.recurring is not None and w.expiry > item.recurring.every:
            blame.append(
                (
                    (*here, "expiry" if item.expiry is not None else "recurring"),
                    True,
                    f"expiry ({format_duration(w.expiry)}) is longer than the interval "
                    f"({format_duration(item.recurring.every)}): occurrences would overlap",
                )
            )
    return blame


def _partial_window_blame(data: Any) -> list[_Blame]:
    """The window cross-checks on the items that are valid alone, when the whole is not.

    Pydantic skips the protocol-level check once any field fails; running it
    on what did validate reports every problem in one pass.
    """
    if not isinstance(data, dict) or not isinstance(data.get("checkins"), list):
        return []
    try:
        defaults = Windows.model_validate(data.get("defaults", {}))
    except ValidationError:
        defaults = Windows()
    items: list[tuple[int, CheckinItem]] = []
    for index, raw in enumerate(data["checkins"]):
        try:
            items.append((index, CheckinItem.model_validate(raw)))
        except ValidationError:
            continue
    return _window_blame(defaults, items)


# --- validation with line:column ---------------------------------------------------------


def validate_protocol_source(
    text: str | bytes, *, known_flows: Collection[str] | None = None
) -> tuple[Protocol | None, list[Problem]]:
    """Parse and check a protocol YAML source; the protocol is ``None`` if any problem is an error.

    ``known_flows`` (flow keys) turns on the check that every named flow
    exists; without it only the shape is checked. Warnings (a local time
    inside the default quiet hours) do not stop the protocol from loading.
    """
    try:
        src = yamlsrc.load(text)
    except SourceError as exc:
        return None, list(exc.problems)
    problems: list[Problem] = []
    protocol: Protocol | None = None
    more = 0
    try:
        protocol = Protocol.model_validate(src.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors[:MAX_PROBLEMS]:
            problems.extend(_problems_from(error, src))
        more = len(errors) - min(len(errors), MAX_PROBLEMS)
        for rel, key, message in _partial_window_blame(src.data):
            problems.append(src.problem(rel, f"{_label(rel)}: {message}", key=key))
    if known_flows is not None:
        problems.extend(_unknown_flows(src, known_flows))
    if protocol is not None:
        problems.extend(_warnings(protocol, src))
    problems = capped(list(set(problems)), more)
    if any(p.is_error for p in problems):
        return None, problems
    return protocol, problems


def load_protocol(text: str | bytes, *, known_flows: Collection[str] | None = None) -> Protocol:
    """Parse a protocol; raise :class:`SourceError` listing every error (warnings are ignored)."""
    protocol, problems = validate_protocol_source(text, known_flows=known_flows)
    if protocol is None:
        raise SourceError([p for p in problems if p.is_error])
    return protocol


def _label(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "protocol"


def _problems_from(error: ErrorDetails, src: yamlsrc.Source) -> list[Problem]:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == _ERROR_TYPE:
        out: list[Problem] = []
        for rel, key, message in ctx["problems"]:
            path = (*loc, *rel)
            out.append(src.problem(path, f"{_label(path)}: {message}", key=key))
        return out
    if kind == "missing":
        return [src.problem(loc[:-1], f"{_label(loc[:-1])}: missing required key {loc[-1]!r}")]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1]))
        return [
            src.problem(
                loc,
                f"{_label(loc[:-1])}: unknown key {loc[-1]!r}; expected one of: {allowed}",
                key=True,
            )
        ]
    value = error.get("input")
    message = _MESSAGES.get(kind)
    if message is not None:
        text = message(value, ctx)
    else:
        msg = error["msg"]
        text = msg[:1].lower() + msg[1:]
    return [src.problem(loc, f"{_label(loc)}: {text}")]


_MESSAGES: dict[str, Callable[[Any, dict[str, Any]], str]] = {
    "string_type": lambda v, _: f"expected a string, got {_show(v)}",
    "int_type": lambda v, _: f"expected a whole number, got {_show(v)}",
    "bool_type": lambda v, _: f"expected true or false, got {_show(v)}",
    "list_type": lambda v, _: f"expected a list, got {_show(v)}",
    "model_type": lambda v, _: f"expected a mapping of keys to values, got {_show(v)}",
    "dict_type": lambda v, _: f"expected a mapping of keys to values, got {_show(v)}",
    "literal_error": lambda v, c: f"{_show(v)} is not valid; expected {c.get('expected')}",
    "string_pattern_mismatch": lambda v, _: (
        f"{_show(v)} is not a valid key: use lowercase letters, digits and _ (e.g. post_session)"
    ),
    "too_short": lambda v, _: "must not be empty",
    "string_too_short": lambda v, _: "must not be empty",
}


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the model at ``loc`` accepts, for "unknown key" messages."""
    model: type[BaseModel] = Protocol
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin in (list, Union, UnionType):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _unknown_flows(src: yamlsrc.Source, known: Collection[str]) -> list[Problem]:
    items = src.data.get("checkins") if isinstance(src.data, dict) else None
    if not isinstance(items, list):
        return []
    out: list[Problem] = []
    for index, item in enumerate(items):
        flow = item.get("flow") if isinstance(item, dict) else None
        if isinstance(flow, str) and flow not in known:
            path = ("checkins", index, "flow")
            out.append(
                src.problem(path, f"{_label(path)}: unknown flow {flow!r}; check the flow's key")
            )
    return out


def _in_default_quiet(t: time) -> bool:
    start, end = DEFAULT_QUIET
    return t >= start or t < end


def _warnings(protocol: Protocol, src: yamlsrc.Source) -> list[Problem]:
    out: list[Problem] = []
    for index, item in enumerate(protocol.checkins):
        path: tuple[str | int, ...] = ("checkins", index, "at")
        at = item.at
        if item.recurring is not None:
            path, at = ("checkins", index, "recurring", "at"), item.recurring.at
        if at is not None and _in_default_quiet(at):
            out.append(
                src.problem(
                    path,
                    f"{_label(path)}: {at:%H:%M} is inside the default quiet hours (21:00-08:00); "
                    "patients with default quiet hours get it at 08:00",
                    severity=Severity.WARNING,
                )
            )
    return out


# --- JSON Schema -------------------------------------------------------------------------


def protocol_json_schema() -> dict[str, Any]:
    """The JSON Schema of a protocol file, as shipped in ``flows/schema/protocol.schema.json``."""
    schema = Protocol.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://aftercare.invalid/schema/protocol.schema.json",
        **schema,
    }


def protocol_schema_text() -> str:
    """The exact text of the shipped schema file; write it out to regenerate the file."""
    return json.dumps(protocol_json_schema(), indent=2, ensure_ascii=False) + "\n"
