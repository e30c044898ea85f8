"""Input and output rules, compiled: scope conditions plus what to look for in content.

Input rules run only after a job was allowed and can only make the answer stricter;
output rules look at a job's result. Both report what they found by kind and location,
never by value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cordum.policy.conditions import Condition, compile_match, first_failure
from cordum.policy.job_input import MAX_SCAN_CHARS, Path, PolicyInput, Text, iter_strings
from cordum.policy.patterns import combine_patterns
from cordum.policy.scanners import scan, spans
from cordum.policy.schema import InputRule, OutputRule, Scanner

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def render_path(path: Path, is_key: bool) -> str:
    """Where a finding is, without ever spelling out a secret.

    Keys are part of the input too: one that is not a plain identifier, or that a
    scanner flags, is shown as ``<key>``; a finding in a key names its parent.
    """
    shown = str(path[0])
    for part in path[1 : len(path) - 1 if is_key else len(path)]:
        if isinstance(part, int):
            shown += f"[{part}]"
        elif _PLAIN_KEY.match(part) and scan(Scanner.SECRET, part) is None:
            shown += f".{part}"
        else:
            shown += ".<key>"
    return f"{shown} (a key)" if is_key else shown


@dataclass(frozen=True)
class ContentDetectors:
    """The content checks of one rule."""

    scanners: tuple[Scanner, ...]
    patterns: Any
    keywords: tuple[str, ...]

    @classmethod
    def build(
        cls, scanners: tuple[Scanner, ...], patterns: tuple[str, ...], keywords: tuple[str, ...]
    ) -> ContentDetectors:
        """Compile a rule's patterns into one RE2 program."""
        return cls(scanners, combine_patterns(patterns) if patterns else None, keywords)

    @property
    def empty(self) -> bool:
        """True when the rule has no content checks (only scope, size or error checks)."""
        return not self.scanners and self.patterns is None and not self.keywords

    def first_finding(self, texts: Iterable[Text]) -> str | None:
        """``kind in path`` for the first thing found, or None."""
        for path, text, is_key in texts:
            found = self._find(text)
            if found is not None:
                return f"{found} in {render_path(path, is_key)}"
        return None

    def _find(self, text: str) -> str | None:
        for scanner in self.scanners:
            kind = scan(scanner, text)
            if kind is not None:
                return f"{scanner.value}:{kind}"
        if self.patterns is not None and self.patterns.search(text) is not None:
            return "content pattern"
        if self.keywords:
            lowered = text.lower()
            for keyword in self.keywords:
                if keyword in lowered:
                    return f"keyword `{keyword}`"
        return None

    def redact(self, value: Any) -> Any:
        """``value`` with every finding replaced by ``[REDACTED:<kind>]``."""
        if isinstance(value, str):
            return self._redact_text(value)
        if isinstance(value, dict):
            return {key: self.redact(child) for key, child in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(child) for child in value]
        return value

    def _redact_text(self, text: str) -> str:
        found = [span for scanner in self.scanners for span in spans(scanner, text)]
        if self.patterns is not None:
            found.extend((m.start(), m.end(), "pattern") for m in self.patterns.finditer(text))
        lowered = text.lower()
        for keyword in self.keywords:
            start = lowered.find(keyword)
            while start >= 0:
                found.append((start, start + len(keyword), "keyword"))
                start = lowered.find(keyword, start + len(keyword))
        out, cursor = [], 0
        for start, end, kind in sorted(found):
            if start < cursor:
                continue
            out.append(text[cursor:start])
            out.append(f"[REDACTED:{kind}]")
            cursor = end
        out.append(text[cursor:])
        return "".join(out)


@dataclass(frozen=True)
class CompiledInputRule:
    """An input rule ready to run."""

    rule: InputRule
    conditions: tuple[Condition, ...]
    detectors: ContentDetectors

    @classmethod
    def build(cls, rule: InputRule) -> CompiledInputRule:
        """Compile scope and detectors of ``rule``."""
        match = rule.match
        detectors = ContentDetectors.build(match.scanners, match.content_patterns, match.keywords)
        return cls(rule, compile_match(match), detectors)

    def finding(self, job: PolicyInput) -> str | None:
        """What this rule found in the job's input, or None (scope checked by the caller)."""
        limit = self.rule.match.input_size_gt
        if limit is not None and job.input_size() > limit:
            return f"input is {job.input_size():,} bytes (limit {limit:,})"
        if self.detectors.empty:
            return None
        texts, truncated = job.texts()
        found = self.detectors.first_finding(texts)
        if found is None and truncated:
            # Fail closed: what was not scanned might hold exactly what this rule looks for.
            return (
                f"input exceeds the {MAX_SCAN_CHARS:,}-character scan limit"
                " and was not fully scanned"
            )
        return found

    def why_not(self, job: PolicyInput) -> tuple[str | None, str]:
        """(failed field, detail) for ``explain`` when the rule did not fire."""
        failed = first_failure(self.conditions, job)
        if failed is not None:
            return failed.field, failed.why_not(job)
        return "content", "nothing found in the input"


@dataclass(frozen=True)
class CompiledOutputRule:
    """An output rule ready to run."""

    rule: OutputRule
    conditions: tuple[Condition, ...]
    detectors: ContentDetectors

    @classmethod
    def build(cls, rule: OutputRule) -> CompiledOutputRule:
        """Compile scope and detectors of ``rule``."""
        match = rule.match
        detectors = ContentDetectors.build(match.scanners, match.content_patterns, match.keywords)
        return cls(rule, compile_match(match), detectors)

    def finding(self, job: PolicyInput, output: Any, failed: bool) -> str | None:
        """What this rule found in the output, or None."""
        match = self.rule.match
        if first_failure(self.conditions, job) is not None:
            return None
        if match.has_error is not None and match.has_error is not failed:
            return None
        if match.output_size_gt is not None:
            size = len(str(output).encode())
            if size > match.output_size_gt:
                return f"output is {size:,} bytes (limit {match.output_size_gt:,})"
        if not self.detectors.empty:
            return self.detectors.first_finding(iter_strings("output", output))
        if match.output_size_gt is None:
            return "job failed" if failed else "job succeeded"
        return None
