"""Loading a flow from YAML text: parse safely, validate, report every problem with line:column.

``validate_flow_source`` is what editors and ``aftercare validate`` call: it
returns all errors and warnings. ``load_flow`` is for code that needs a
usable flow and treats any error as fatal.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from flows import yamlsrc
from flows.durations import parse_duration
from flows.model import ID_PATTERN, LANG_PATTERN, Flow
from flows.problems import MAX_PROBLEMS, Problem, SourceError, TooManyProblems, capped
from flows.validate import check_flow, check_references

__all__ = ["load_flow", "validate_flow_source"]


def load_flow(text: str | bytes) -> Flow:
    """The flow in ``text``; raise :class:`SourceError` with all problems if any is an error."""
    flow, problems = validate_flow_source(text)
    if flow is None:
        raise SourceError(problems)
    return flow


def validate_flow_source(
    text: str | bytes, *, known_flows: Collection[str] | None = None
) -> tuple[Flow | None, list[Problem]]:
    """Every problem in ``text`` (errors and warnings, by position); the flow if there is no error.

    ``known_flows`` enables the check that ``handover`` names an existing flow.
    """
    try:
        src = yamlsrc.load(text)
    except SourceError as exc:
        return None, exc.problems
    if not isinstance(src.data, dict):
        return None, [Problem(1, 1, "a flow file must be a mapping with key, title and nodes")]
    try:
        flow = Flow.model_validate(src.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # each description may search for a "did you mean": describe only what is shown
        described = [_problem(err, src) for err in errors[:MAX_PROBLEMS]]
        more: int | None = len(errors) - len(described)
        # the reference checks that need no model, so they come in this pass too
        try:
            described += check_references(src.data, src, known_flows=known_flows)
        except TooManyProblems as stop:
            described += stop.problems
            more = None
        return None, _sorted(described, more=more)
    try:
        problems = _sorted(check_flow(flow, src, known_flows=known_flows))
    except TooManyProblems as stop:
        problems = _sorted(stop.problems, more=None)
    if any(p.is_error for p in problems):
        return None, problems
    return flow, problems


def _sorted(problems: list[Problem], more: int | None = 0) -> list[Problem]:
    unique = {(p.line, p.column, p.message): p for p in problems}
    return capped(list(unique.values()), more)


def _data_path(loc: Sequence[str | int], data: Any) -> tuple[list[str | int], bool]:
    """The part of a pydantic ``loc`` that exists in the data (union tags are skipped)."""
    path: list[str | int] = []
    on_key = False
    for el in loc:
        if el == "[key]":
            on_key = True
        elif _has(data, el):
            path.append(el)
            data = data[el]
    return path, on_key


def _has(data: Any, el: str | int) -> bool:
    if isinstance(data, dict):
        return isinstance(el, str) and el in data
    return isinstance(data, list) and isinstance(el, int) and 0 <= el < len(data)


def _where(path: Sequence[str | int], data: Any) -> str:
    for el in path:
        data = data[el]
    if not path:
        return " at the top level"
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return f" in node {data['id']!r}"
    return ""


def _field(loc: Sequence[str | int]) -> str:
    for el in reversed(loc):
        if isinstance(el, str) and el != "[key]":
            return el
    return "value"


def _problem(err: ErrorDetails, src: yamlsrc.Source) -> Problem:
    loc = err["loc"]
    path, on_key = _data_path(loc, src.data)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    name = _field(loc)
    if kind == "extra_forbidden":
        msg = f"unknown key {name!r}"
        close = difflib.get_close_matches(name, _known_keys(), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return src.problem(path, msg, key=True)
    if kind == "missing":
        return src.problem(path, f"missing required key {name!r}{_where(path, src.data)}")
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", ""))
        msg = f"unknown type {ctx.get('tag')!r}: expected one of {expected}"
        return src.problem([*path, "type"], msg)
    if kind == "union_tag_not_found":
        return src.problem(path, "missing required key 'type'")
    if kind == "string_pattern_mismatch":
        return src.problem(path, _pattern_message(name, value, str(ctx.get("pattern", ""))))
    if kind == "value_error":
        return src.problem(path, err["msg"].removeprefix("Value error, "), key=on_key)
    msg = err["msg"]
    msg = msg[:1].lower() + msg[1:]
    if isinstance(value, str | int | float | bool) and not isinstance(value, dict):
        msg += f" (got {value!r})"
    return src.problem(path, f"{name}: {msg}", key=on_key)


def _pattern_message(name: str, value: Any, pattern: str) -> str:
    if pattern == ID_PATTERN:
        return (
            f"{name}: {value!r} is not a valid identifier: use lowercase letters, digits and "
            "underscores, starting with a letter"
        )
    if pattern == LANG_PATTERN:
        return f"{value!r} is not a language code: use a 2- or 3-letter code like en or es"
    try:
        parse_duration(str(value))
    except ValueError as exc:
        return f"{name}: {exc}"
    return f"{name}: {value!r} does not match {pattern}"


@lru_cache(maxsize=1)
def _known_keys() -> tuple[str, ...]:
    """Every key any flow model accepts (for "did you mean" suggestions)."""
    from flows import model

    keys: set[str] = set()
    for obj in vars(model).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            for fname, info in obj.model_fields.items():
                keys.add(info.alias or fname)
    return tuple(sorted(keys))
