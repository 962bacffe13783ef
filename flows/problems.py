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
    out: those past the cap plus ``more`` errors the collector already left out (None: it
    stopped early on errors and did not count). The note is an error when anything it
    hides is, so a flow with only warnings past the cap still loads."""
    ordered = sorted(problems, key=lambda p: (p.line, p.column, p.message))
    shown, hidden = ordered[:MAX_PROBLEMS], ordered[MAX_PROBLEMS:]
    left = len(hidden) + (more or 0)
    if not shown or (left == 0 and more is not None):
        return shown
    severity = (
        Severity.ERROR
        if more is None or more > 0 or any(p.is_error for p in hidden)
        else Severity.WARNING
    )
    what = "and more problems" if more is None else f"and {left} more problems"
    last = shown[-1]
    note = f"{what} not shown; fix these first"
    return [*shown, Problem(last.line, last.column, note, severity)]


class SourceError(Exception):
    """Raised when a source cannot be read at all (bad YAML, too large, unsafe)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.format() for p in problems))
        self.problems = problems
