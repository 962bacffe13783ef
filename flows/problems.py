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


class SourceError(Exception):
    """Raised when a source cannot be read at all (bad YAML, too large, unsafe)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.format() for p in problems))
        self.problems = problems
