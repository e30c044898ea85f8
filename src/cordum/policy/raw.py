"""The raw YAML data, before (and regardless of) schema validation.

Two jobs are done here. Checks that only need the raw data (duplicate rule ids, match keys
that are misspelt or misplaced fields) run even when the schema finds other problems, so
one run reports every mistake. And values that YAML re-typed (``1.10`` read as 1.1,
``on`` as true) are put back as written where the schema expects text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cordum.policy.errors import PolicyIssue, did_you_mean
from cordum.policy.schema import (
    LABEL_DIALECT_KEYS,
    MCP_DIMENSIONS,
    InputMatch,
    Match,
    OutputMatch,
    match_field_names,
)
from cordum.policy.source import ParsedYaml

RULE_LISTS = ("rules", "input_rules", "output_rules")
MATCH_MODELS: dict[str, type[Match]] = {
    "rules": Match,
    "input_rules": InputMatch,
    "output_rules": OutputMatch,
}
Loc = tuple[str | int, ...]


def as_written(parsed: ParsedYaml) -> dict[str, Any]:
    """The data, with numbers and booleans that stand for text put back as written.

    YAML 1.1 reads ``2026.10`` as 2026.1, ``010`` as 8, ``on`` as true. For values that
    are text to us (the version, label values and implicit label values) that would
    silently change what the rule compares, so they are taken from the source instead.
    """
    data: dict[str, Any] = parsed.data
    locations: list[Loc] = [("version",)] if _typed_scalar(data.get("version")) else []
    for kind in RULE_LISTS:
        rules = data.get(kind)
        known = match_field_names(MATCH_MODELS[kind])
        for index, rule in enumerate(rules if isinstance(rules, list) else ()):
            match_key = spelling(rule, ("match", "when"))
            match = rule.get(match_key) if isinstance(rule, dict) else None
            if not isinstance(match, dict):
                continue
            for key, value in match.items():
                base = (kind, index, match_key, key)
                if key in ("labels", "label_allowlist") and isinstance(value, dict):
                    for label, values in value.items():
                        locations.extend(_typed_locations((*base, label), values))
                elif isinstance(key, str) and key not in known:
                    locations.extend(_typed_locations(base, value))
    for loc in locations:
        text = parsed.scalar_text(loc)
        if text is not None:
            data = _replaced(data, loc, text)
    return data


def _typed_locations(loc: Loc, value: Any) -> list[Loc]:
    """Where, in a value or list of values, YAML typed a scalar that was meant as text."""
    if isinstance(value, list):
        return [(*loc, index) for index, item in enumerate(value) if _typed_scalar(item)]
    return [loc] if _typed_scalar(value) else []


def _typed_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float)


def _replaced(node: Any, loc: Loc, value: Any) -> Any:
    """A copy of ``node`` with the value at ``loc`` replaced (only the path is copied)."""
    if not loc:
        return value
    head, rest = loc[0], loc[1:]
    if isinstance(node, dict):
        return {**node, head: _replaced(node[head], rest, value)}
    copied = list(node)
    copied[head] = _replaced(node[head], rest, value)  # type: ignore[index]
    return copied


def raw_checks(parsed: ParsedYaml, strict: bool) -> tuple[list[PolicyIssue], list[PolicyIssue]]:
    """Duplicate rule ids and match keys that are not fields, found on the raw data.

    Running these before (and regardless of) schema validation means one run reports a
    misspelt match key together with, say, an unknown decision elsewhere.
    """
    errors: list[PolicyIssue] = []
    notes: list[PolicyIssue] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for kind in RULE_LISTS:
        rules = parsed.data.get(kind)
        if not isinstance(rules, list):
            continue
        for index, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            rule_id = rule.get("id", rule.get("name"))
            rule_name = str(rule_id) if isinstance(rule_id, str | int) else None
            if rule_name is not None:
                # Positions are only looked up for a duplicate: the happy path pays nothing.
                first = first_seen.setdefault(rule_name.strip(), (kind, index))
                if first != (kind, index):
                    first_line = parsed.position(id_loc(parsed.data, *first))[0]
                    errors.append(
                        parsed.issue_at(
                            id_loc(parsed.data, kind, index),
                            "duplicate_rule_id",
                            f"rule id `{rule_name}` is used twice (first on line {first_line})",
                            rule_id=rule_name,
                            field="id",
                            hint="rule ids must be unique within a bundle; rename one",
                        )
                    )
            match_key = spelling(rule, ("match", "when"))
            match = rule.get(match_key)
            if isinstance(match, dict):
                found = _match_key_issues(parsed, kind, index, match_key, match, rule_name, strict)
                for issue in found:
                    (errors if issue.severity == "error" else notes).append(issue)
    return errors, notes


_RULE_LEVEL = "on the rule itself, beside `match`"
_BELONGS_ELSEWHERE = {
    **dict.fromkeys(("any", "all"), "under `risk_tags:` (`risk_tags: {any: [...]}`)"),
    **{f"{verb}_{dim}s": "under `mcp:`" for verb in ("allow", "deny") for dim in MCP_DIMENSIONS},
    **dict.fromkeys(
        ("scanners", "content_patterns", "keywords", "input_size_gt"),
        "to an input rule (`input_rules:`)",
    ),
    **dict.fromkeys(("output_size_gt", "has_error"), "to an output rule (`output_rules:`)"),
    **dict.fromkeys(("max_requests", "window_seconds", "key"), "under `velocity:`"),
    **dict.fromkeys(
        (
            "budgets",
            "sandbox",
            "toolchain",
            "diff",
            "redaction_level",
            "max_output_bytes",
            "allowed_destinations",
            "approval_ttl_s",
            "max_runtime_sec",
        ),
        "under `constraints:`",
    ),
    **dict.fromkeys(
        (
            "id",
            "name",
            "decision",
            "reason",
            "description",
            "constraints",
            "remediations",
            "velocity",
            "severity",
            "enabled",
            "match",
            "when",
        ),
        _RULE_LEVEL,
    ),
}


def _match_key_issues(
    parsed: ParsedYaml,
    kind: str,
    index: int,
    match_key: str,
    match: dict[str, Any],
    rule_id: str | None,
    strict: bool,
) -> list[PolicyIssue]:
    known = match_field_names(MATCH_MODELS[kind])
    issues = []
    for key in match:
        if not isinstance(key, str) or key in known:
            continue
        normalized = key.strip().lower()
        if normalized in LABEL_DIALECT_KEYS:
            continue
        loc = (kind, index, match_key, key)
        where = {"rule_id": rule_id, "field": f"{match_key}.{key}"}
        belongs = _BELONGS_ELSEWHERE.get(normalized)
        if belongs is not None:
            issues.append(
                parsed.issue_at(
                    loc,
                    "misplaced_field",
                    f"`{key}` is not a match field: it belongs {belongs}",
                    hint="check the indentation; under `match` it would be read as a label",
                    **where,
                )
            )
            continue
        suggestion = did_you_mean(normalized, known)
        label_hint = f"to compare the job label `{normalized}`, write it under `labels:`"
        code, severity = "unknown_match_field", "error"
        message = f"`{key}` is not a match field"
        if suggestion == normalized:
            hint = f"match keys are written in lower case: `{suggestion}`"
        elif suggestion is not None:
            hint = f"did you mean `{suggestion}`? {label_hint}"
        elif strict:
            hint = f"{label_hint} (--strict refuses implicit label keys)"
        else:
            code, severity = "implicit_label", "warning"
            message += f"; it is compared with the job label `{normalized}`"
            message += " (then the input field of that name)"
            hint = f"if that is intended, write it as `labels: {{{normalized}: ...}}`"
        issues.append(parsed.issue_at(loc, code, message, hint=hint, severity=severity, **where))
    return issues


def id_loc(raw: Any, kind: str, index: int) -> Loc:
    """Where a rule's id is written (``id`` or its dialect spelling ``name``)."""
    return (kind, index, present_key(raw, (kind, index), ("id", "name")))


def present_key(raw: Any, loc: Loc, choices: tuple[str, ...]) -> str:
    """Which of the spellings ``choices`` the mapping at ``loc`` uses (the first if none)."""
    return spelling(walk(raw, loc), choices)


def spelling(mapping: Any, choices: tuple[str, ...]) -> str:
    """Which of the spellings ``choices`` ``mapping`` uses (the first if none)."""
    if isinstance(mapping, dict):
        for choice in choices:
            if choice in mapping:
                return choice
    return choices[0]


def source_key(raw: Any, loc: Loc, normalized: str) -> str:
    """The key as written in the mapping at ``loc`` for a key stored lower-cased."""
    node = walk(raw, loc)
    if isinstance(node, dict):
        for key in node:
            if isinstance(key, str) and key.strip().lower() == normalized:
                return key
    return normalized


def walk(raw: Any, loc: Sequence[str | int]) -> Any:
    """The value at ``loc`` in plain data, or None when the path does not exist."""
    node = raw
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node
