"""Load errors people can act on.

Every problem found while loading a policy becomes a :class:`PolicyIssue` that names the
file, line and column, the rule, the field, what is wrong and what is allowed there. The
loader collects all of them before giving up, so one run shows every mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy document."""

    code: str
    message: str
    file: str = "<policy>"
    line: int | None = None
    column: int | None = None
    rule_id: str | None = None
    field: str | None = None
    hint: str | None = None
    severity: str = "error"

    @property
    def location(self) -> str:
        """``file:line:column`` (as much of it as is known)."""
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def format(self) -> str:
        """Compiler-style one-liner plus an indented hint."""
        subject = []
        if self.rule_id:
            subject.append(f"rule `{self.rule_id}`")
        if self.field:
            subject.append(self.field)
        head = f"{self.location}: {self.severity}[{self.code}]: "
        if subject:
            head += " › ".join(subject) + ": "
        text = head + self.message
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for ``--json`` output and the API."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule_id": self.rule_id,
            "field": self.field,
            "hint": self.hint,
        }


@dataclass
class PolicyLoadError(Exception):
    """A policy could not be loaded; ``issues`` says everything that is wrong with it."""

    issues: Sequence[PolicyIssue] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    def __str__(self) -> str:
        count = len(self.issues)
        lines = [f"policy not loaded: {count} problem{'s' if count != 1 else ''}"]
        lines.extend(issue.format() for issue in self.issues)
        return "\n".join(lines)


class InvalidJobError(ValueError):
    """A job handed to the kernel is malformed; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"job field `{field_name}`: {message}")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest known spelling of ``word``, or None when nothing is close."""
    normalized = word.strip().lower().replace("-", "_")
    options = list(choices)
    for option in options:
        if option.lower().replace("-", "_") == normalized:
            return option
    matches = difflib.get_close_matches(normalized, options, n=1, cutoff=0.75)
    return matches[0] if matches else None


def allowed_hint(choices: Iterable[str], suggestion: str | None = None) -> str:
    """'did you mean `x`? allowed here: a, b, c' in one consistent shape."""
    listed = ", ".join(sorted(choices))
    if suggestion:
        return f"did you mean `{suggestion}`? allowed here: {listed}"
    return f"allowed here: {listed}"
