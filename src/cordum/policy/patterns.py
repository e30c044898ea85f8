"""Content patterns from policies, compiled with RE2.

Policies are code written by people we do not control, and input comes from agents we
trust even less. RE2 guarantees linear-time matching, so no pattern and no input can
cause catastrophic backtracking. The price is that lookaround and backreferences (the
constructs that need backtracking) are refused at load time, with a clear message.
"""

from __future__ import annotations

from typing import Any

import re2

MAX_PATTERN_LENGTH = 2_000
_RE2_MEMORY = 8 << 20


class PatternError(ValueError):
    """A content pattern that cannot be compiled; ``hint`` says what to change."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MEMORY
    return options


def compile_pattern(pattern: str) -> Any:
    """Compile one content pattern with RE2, or raise :class:`PatternError`."""
    if not pattern:
        raise PatternError("empty pattern", "an empty pattern matches every input")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    return _compile(pattern)


def combine_patterns(patterns: tuple[str, ...]) -> Any:
    """One RE2 program matching any of ``patterns``: one scan per text instead of one each.

    The schema compiles the combination when a policy is loaded, so a set of patterns
    too large for RE2's memory bound is a load error, never a failure at evaluation.
    """
    return _compile("|".join(f"(?:{p})" for p in patterns))


def _compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        hint = None
        if "perl operator" in detail or "escape sequence" in detail:
            hint = (
                "patterns use RE2 syntax: no lookaround (?=…)/(?!…) and no backreferences \\1;"
                " these are what make regexes backtrack catastrophically"
            )
        raise PatternError(f"invalid regular expression: {detail}", hint) from None
