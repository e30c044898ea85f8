"""From YAML text to a validated policy document, with errors that point at the line.

One validation path serves files, directories of bundles and bundles handed over by the
API, so a bundle that would fail at load time also fails at publish time.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError

from cordum.policy.errors import PolicyIssue, PolicyLoadError, allowed_hint, did_you_mean
from cordum.policy.schema import (
    DIALECT_CORDUM,
    DIALECTS,
    LABEL_DIALECT_KEYS,
    InputMatch,
    Match,
    OutputMatch,
    PolicyDocument,
    match_field_names,
)
from cordum.policy.source import ParsedYaml

RULE_LISTS = ("rules", "input_rules", "output_rules")
_MATCH_MODELS: dict[str, type[Match]] = {
    "rules": Match,
    "input_rules": InputMatch,
    "output_rules": OutputMatch,
}


@dataclass(frozen=True)
class SourceRef:
    """Where something was written: file (or bundle id) and line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class LoadedDocument:
    """One validated file or bundle, with the positions of what it defines."""

    name: str
    document: PolicyDocument
    source: ParsedYaml
    rule_sources: dict[str, tuple[SourceRef, ...]] = field(default_factory=dict)
    tenant_sources: dict[str, SourceRef] = field(default_factory=dict)
    notes: tuple[PolicyIssue, ...] = ()

    def issue_at(
        self, loc: Sequence[str | int], code: str, message: str, **extra: Any
    ) -> PolicyIssue:
        """An issue positioned at ``loc`` in this document."""
        line, column = self.source.position(loc)
        return PolicyIssue(
            code=code, message=message, file=self.name, line=line, column=column, **extra
        )


def validate_document(
    parsed: ParsedYaml, *, dialect: str = DIALECT_CORDUM, strict: bool = False
) -> LoadedDocument:
    """Validate parsed YAML as a policy document; raise :class:`PolicyLoadError` if it is not."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
    if not isinstance(parsed.data, dict):
        line, column = parsed.position(())
        raise PolicyLoadError(
            [
                PolicyIssue(
                    code="not_a_mapping",
                    message=f"a policy is a mapping of settings, got {_kind(parsed.data)}",
                    file=parsed.name,
                    line=line,
                    column=column,
                    hint="start with `version:`, `default_decision:` and `rules:`",
                )
            ]
        )
    raw_errors, notes = _raw_checks(parsed, strict)
    data = _version_as_written(parsed)
    try:
        document = PolicyDocument.model_validate(data, context={"dialect": dialect})
    except ValidationError as exc:
        found = raw_errors + translate_errors(exc, parsed, PolicyDocument)
        raise PolicyLoadError(_in_file_order(found)) from None
    loaded = LoadedDocument(
        name=parsed.name,
        document=document,
        source=parsed,
        rule_sources={
            kind: tuple(SourceRef(parsed.name, line) for line in parsed.item_lines(kind))
            for kind in RULE_LISTS
        },
        tenant_sources={
            name: SourceRef(parsed.name, parsed.node_line(("tenants", name)))
            for name in document.tenants
        },
    )
    errors = raw_errors + _validated_checks(loaded)
    if errors:
        raise PolicyLoadError(_in_file_order(errors))
    if document.rules and document.tenants:
        notes.append(
            loaded.issue_at(
                ("tenants",),
                "legacy_tenants_ignored",
                "`tenants` is ignored because `rules` is not empty",
                severity="warning",
                hint="legacy tenant lists apply only to policies without rules;"
                " move them into rules",
            )
        )
    return LoadedDocument(
        name=loaded.name,
        document=document,
        source=parsed,
        rule_sources=loaded.rule_sources,
        tenant_sources=loaded.tenant_sources,
        notes=tuple(notes),
    )


def _version_as_written(parsed: ParsedYaml) -> dict[str, Any]:
    """The data, with a numeric ``version`` as the text the author wrote.

    YAML reads ``version: 2026.10`` as the number 2026.1 (and ``010`` as 8), which would
    make two different versions share a snapshot id.
    """
    data: dict[str, Any] = parsed.data
    version = data.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        text = parsed.scalar_text(("version",))
        if text is not None:
            return {**data, "version": text}
    return data


def _in_file_order(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.column or 0))


# --- checks on the raw data: they run even when pydantic finds other problems ----------


def _raw_checks(parsed: ParsedYaml, strict: bool) -> tuple[list[PolicyIssue], list[PolicyIssue]]:
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
                    line, column = parsed.position(_id_loc(parsed.data, kind, index))
                    first_line = parsed.position(_id_loc(parsed.data, *first))[0]
                    errors.append(
                        PolicyIssue(
                            code="duplicate_rule_id",
                            message=f"rule id `{rule_name}` is used twice"
                            f" (first on line {first_line})",
                            file=parsed.name,
                            line=line,
                            column=column,
                            rule_id=rule_name,
                            field="id",
                            hint="rule ids must be unique within a bundle; rename one",
                        )
                    )
            match_key = _present_key(parsed.data, (kind, index), ("match", "when"))
            match = rule.get(match_key)
            if isinstance(match, dict):
                found = _match_key_issues(parsed, kind, index, match_key, match, rule_name, strict)
                for issue in found:
                    (errors if issue.severity == "error" else notes).append(issue)
    return errors, notes


def _match_key_issues(
    parsed: ParsedYaml,
    kind: str,
    index: int,
    match_key: str,
    match: dict[str, Any],
    rule_id: str | None,
    strict: bool,
) -> list[PolicyIssue]:
    known = match_field_names(_MATCH_MODELS[kind])
    issues = []
    for key in match:
        if not isinstance(key, str) or key in known:
            continue
        normalized = key.strip().lower()
        if normalized in LABEL_DIALECT_KEYS:
            continue
        line, column = parsed.position((kind, index, match_key, key))
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
        issues.append(
            PolicyIssue(
                code=code,
                message=message,
                file=parsed.name,
                line=line,
                column=column,
                rule_id=rule_id,
                field=f"{match_key}.{key}",
                hint=hint,
                severity=severity,
            )
        )
    return issues


# --- checks that need the validated document ------------------------------------------


def _validated_checks(loaded: LoadedDocument) -> list[PolicyIssue]:
    errors: list[PolicyIssue] = []
    raw = loaded.source.data
    for kind in RULE_LISTS:
        for index, rule in enumerate(getattr(loaded.document, kind)):
            match_key = _present_key(raw, (kind, index), ("match", "when"))
            for key, value in rule.match.implicit_labels().items():
                loc = (kind, index, match_key, _source_key(raw, (kind, index, match_key), key))
                if key in rule.match.labels:
                    message = f"label `{key}` is constrained both here and under `labels`"
                    errors.append(
                        loaded.issue_at(
                            loc,
                            "conflicting_fields",
                            message,
                            rule_id=rule.id,
                            field=f"{match_key}.{key}",
                            hint="keep one of the two",
                        )
                    )
                elif not isinstance(value, list):
                    errors.append(
                        loaded.issue_at(
                            loc,
                            "bad_label_value",
                            f"`{key}` is compared with the job label `{key}`, so its value must"
                            f" be text or a list of text, got {_kind(value)}",
                            rule_id=rule.id,
                            field=f"{match_key}.{key}",
                        )
                    )
    return errors


def _id_loc(raw: Any, kind: str, index: int) -> tuple[str | int, ...]:
    return (kind, index, _present_key(raw, (kind, index), ("id", "name")))


def _present_key(raw: Any, loc: tuple[str | int, ...], choices: tuple[str, ...]) -> str:
    node = _walk(raw, loc)
    if isinstance(node, dict):
        for choice in choices:
            if choice in node:
                return choice
    return choices[0]


def _source_key(raw: Any, loc: tuple[str | int, ...], normalized: str) -> str:
    node = _walk(raw, loc)
    if isinstance(node, dict):
        for key in node:
            if isinstance(key, str) and key.strip().lower() == normalized:
                return key
    return normalized


def _walk(raw: Any, loc: Sequence[str | int]) -> Any:
    node = raw
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


# --- pydantic errors -> policy issues ------------------------------------------------


def translate_errors(
    exc: ValidationError,
    parsed: ParsedYaml | None,
    root: type[BaseModel],
    name: str = "<input>",
) -> list[PolicyIssue]:
    """Pydantic errors as policy issues: positioned (when ``parsed`` is given), with a hint."""
    issues = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        message, hint = _describe(error, loc, root)
        line, column = parsed.position(loc) if parsed is not None else (None, None)
        rule_id, field_path = _subject(parsed.data if parsed is not None else None, loc)
        issues.append(
            PolicyIssue(
                code=_code(error),
                message=message,
                file=parsed.name if parsed is not None else name,
                line=line,
                column=column,
                rule_id=rule_id,
                field=field_path,
                hint=hint,
            )
        )
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.column or 0))


_PLAIN_MESSAGES = {
    "string_type": "expected text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "string_too_short": "must not be empty",
}


_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "string_too_short": "empty_value",
}


def _code(error: Any) -> str:
    if "message" in (error.get("ctx") or {}):
        return str(error["type"])
    return _CODES.get(str(error["type"]), "wrong_type")


def _describe(
    error: Any, loc: tuple[str | int, ...], root: type[BaseModel]
) -> tuple[str, str | None]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if "message" in ctx:
        return str(ctx["message"]), ctx.get("hint")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _allowed_fields(root, loc[:-1])
        return f"unknown field `{name}`", allowed_hint(allowed, did_you_mean(name, allowed))
    if kind == "missing":
        return f"missing required field `{loc[-1]}`", None
    if kind in ("greater_than", "greater_than_equal", "less_than_equal"):
        bound = ctx.get("gt", ctx.get("ge", ctx.get("le")))
        relation = {"greater_than": ">", "greater_than_equal": ">=", "less_than_equal": "<="}[kind]
        return f"must be {relation} {bound}, got {got!r}", None
    if kind in _PLAIN_MESSAGES:
        hint = None
        if kind == "string_type" and isinstance(got, int | float) and not isinstance(got, bool):
            hint = f"quote it to use it as text: '{got}'"
        return f"{_PLAIN_MESSAGES[kind]}, got {_kind(got)}", hint
    return str(error["msg"]), None


def _subject(raw: Any, loc: tuple[str | int, ...]) -> tuple[str | None, str | None]:
    """(rule id, field path relative to the rule) for an error location."""
    if len(loc) >= 2 and loc[0] in RULE_LISTS and isinstance(loc[1], int):
        rule = _walk(raw, loc[:2])
        rule_id = None
        if isinstance(rule, dict):
            candidate = rule.get("id", rule.get("name"))
            rule_id = str(candidate) if candidate is not None else None
        prefix = "" if rule_id else f"{loc[0]}[{loc[1]}]"
        rest = _dotted(loc[2:])
        return rule_id, ".".join(part for part in (prefix, rest) if part) or None
    return None, _dotted(loc) or None


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_fields(root: type[BaseModel], loc: Sequence[str | int]) -> tuple[str, ...]:
    model = _model_at(root, loc)
    if model is None:
        return ()
    return tuple(model.model_fields)


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if args else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = _field_annotation(annotation, part)
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_annotation(model: type[BaseModel], name: str) -> Any:
    for field_name, info in model.model_fields.items():
        aliases: tuple[str, ...] = (field_name,)
        if isinstance(info.validation_alias, AliasChoices):
            aliases = tuple(str(choice) for choice in info.validation_alias.choices)
        if name in aliases or name == field_name:
            return info.annotation
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
