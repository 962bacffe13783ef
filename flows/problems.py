"""Problems found in flow and protocol sources, each tied to a line and column.

Admins fix what they can find: every problem carries the 1-based line and
column of the YAML node it is about, and formats as ``file:line:col: message``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: int
    message: str
    severity: Severity = Severity.ERROR
    path: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def format(self, filename: str = "<input>") -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{filename}:{self.line}:{self.column}: {prefix}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "severity": str(self.severity),
            "path": self.path,
        }


MAX_PROBLEMS = 100
"""Collecting stops here: a draft with thousands of mistakes gets the first hundred and a
count, not a per-problem search that would keep the server busy."""


class TooManyProblems(Exception):
    """Raised by a collector that reached ``MAX_PROBLEMS``; its caller reports what it has."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"more than {MAX_PROBLEMS} problems")
        self.problems = problems


def capped(problems: list[Problem], more: int | None = 0) -> list[Problem]:
    """At most ``MAX_PROBLEMS`` problems, by position, then one saying how many were left
    out: those past the cap plus ``more`` already left out by the collector (None: it gave
    up early and did not count)."""
    ordered = sorted(problems, key=lambda p: (p.line, p.column, p.message))
    shown = ordered[:MAX_PROBLEMS]
    left = len(ordered) - len(shown) + (more or 0)
    if not shown or (left == 0 and more is not None):
        return shown
    what = "and more problems" if more is None else f"and {left} more problems"
    last = shown[-1]
    return [*shown, Problem(last.line, last.column, f"{what} not shown; fix these first")]


class SourceError(Exception):
    """Raised when a source cannot be read at all (bad YAML, too large, unsafe)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.format() for p in problems))
        self.problems = problems
