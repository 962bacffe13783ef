"""Safe YAML loading that remembers where every value came from.

Flow definitions are untrusted input. This loader accepts plain YAML only:
no anchors or aliases (no "billion laughs"), no custom tags, no duplicate
keys, and a size cap. Every value's position is kept under its path so the
validator can report ``line:column`` for any problem, including the ones
pydantic finds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from flows.problems import Problem, SourceError

MAX_SOURCE_BYTES = 256 * 1024
MAX_DEPTH = 64

Path = tuple[str | int, ...]

_STANDARD_TAGS = frozenset(
    {
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:map",
        "tag:yaml.org,2002:seq",
    }
)

try:  # the C loader is ~10x faster and gives the same marks
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment,unused-ignore]
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader


@dataclass(slots=True)
class Source:
    """Plain data (dicts, lists, scalars) plus the position of every node."""

    data: Any
    text: str
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def pos(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """Line and column of ``path``, or of its nearest ancestor that has one."""
        p: Path = tuple(path)
        while True:
            if key and p in self.key_positions:
                return self.key_positions[p]
            if p in self.positions:
                return self.positions[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def problem(self, path: Sequence[str | int], message: str, **kw: Any) -> Problem:
        line, col = self.pos(path, key=kw.pop("key", False))
        return Problem(line, col, message, path=_dotted(path), **kw)


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def load(text: str | bytes, *, max_bytes: int = MAX_SOURCE_BYTES) -> Source:
    """Parse ``text`` into a :class:`Source`; raise :class:`SourceError` if unsafe or invalid."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise SourceError(
            [Problem(1, 1, f"document is {len(raw)} bytes; the limit is {max_bytes} bytes")]
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            [Problem(1, 1, f"document is not valid UTF-8 (byte {exc.start})")]
        ) from exc
    if "\x00" in decoded:
        raise SourceError([Problem(1, 1, "document contains a NUL character")])
    _reject_anchors(decoded)
    try:
        node = yaml.compose(decoded, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = exc.problem or exc.context or "invalid YAML"
        tab = _indent_tab(decoded, line)
        if tab is not None:
            raise SourceError(
                [Problem(line, tab, "tabs are not allowed for indentation; use spaces")]
            ) from exc
        raise SourceError([Problem(line, col, f"invalid YAML: {msg}")]) from exc
    except yaml.reader.ReaderError as exc:
        line, col = _position(decoded, exc.position)
        code = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        )
        raise SourceError(
            [Problem(line, col, f"invalid control character U+{code:04X}; remove it")]
        ) from exc
    except yaml.YAMLError as exc:
        raise SourceError([Problem(1, 1, f"invalid YAML: {exc}")]) from exc
    src = Source(data=None, text=decoded)
    if node is None:
        raise SourceError([Problem(1, 1, "document is empty")])
    problems: list[Problem] = []
    # a constructor per document: one shared across loads keeps every node it ever built
    src.data = _build(node, (), src, problems, 0, yaml.constructor.SafeConstructor())
    if problems:
        raise SourceError(problems)
    return src


def _indent_tab(text: str, line: int) -> int | None:
    """Column of a tab in the indentation of ``line`` (1-based), if there is one."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    row = lines[line - 1]
    indent = row[: len(row) - len(row.lstrip(" \t"))]
    pos = indent.find("\t")
    return None if pos < 0 else pos + 1


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    before = text[: max(index, 0)]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _reject_anchors(text: str) -> None:
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                line, col = _mark(event)  # type: ignore[arg-type]
                raise SourceError(
                    [
                        Problem(
                            line, col, "YAML aliases (*name) are not allowed; write the value out"
                        )
                    ]
                )
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                line, col = _mark(event)  # type: ignore[arg-type]
                raise SourceError(
                    [
                        Problem(
                            line, col, "YAML anchors (&name) are not allowed; write the value out"
                        )
                    ]
                )
    except yaml.YAMLError:
        return  # compose() reports it with a better message


def _build(
    node: yaml.Node,
    path: Path,
    src: Source,
    problems: list[Problem],
    depth: int,
    constructor: yaml.constructor.SafeConstructor,
) -> Any:
    src.positions[path] = _mark(node)
    if depth > MAX_DEPTH:
        line, col = _mark(node)
        problems.append(Problem(line, col, f"nesting deeper than {MAX_DEPTH} levels"))
        return None
    if node.tag not in _STANDARD_TAGS:
        line, col = _mark(node)
        problems.append(Problem(line, col, f"custom YAML tag {node.tag!r} is not allowed"))
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line, col = _mark(key_node)
                problems.append(Problem(line, col, "mapping keys must be plain scalars"))
                continue
            key = key_node.value
            if key in out:
                line, col = _mark(key_node)
                problems.append(
                    Problem(line, col, f"duplicate key {key!r}", path=_dotted((*path, key)))
                )
                continue
            src.key_positions[(*path, key)] = _mark(key_node)
            out[key] = _build(value_node, (*path, key), src, problems, depth + 1, constructor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), src, problems, depth + 1, constructor)
            for i, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    try:
        return _scalar(node, constructor)
    except ValueError:
        # Python refuses ints of thousands of digits; no flow needs one
        line, col = _mark(node)
        problems.append(
            Problem(line, col, "number is too long; write a smaller number", path=_dotted(path))
        )
        return None


_YAML12_BOOLS = frozenset({"true", "false"})


def _scalar(node: yaml.ScalarNode, constructor: yaml.constructor.SafeConstructor) -> Any:
    # YAML 1.1 reads yes/no/on/off as booleans (the "Norway problem"); flows list
    # words like "yes" and "no" as synonyms, so only true/false are booleans here.
    if node.tag == "tag:yaml.org,2002:bool" and node.value.lower() not in _YAML12_BOOLS:
        return node.value
    return constructor.construct_object(node, deep=True)


def dump(data: Mapping[str, Any]) -> str:
    """Serialise plain data back to block-style YAML (used for new drafts and exports)."""
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=100)
