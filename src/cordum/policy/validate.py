"""From YAML text to a validated policy document, with errors that point at the line.

One validation path serves files, directories of bundles and bundles handed over by the
API, so a bundle that would fail at load time also fails at publish time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cordum.policy.errors import PolicyIssue, PolicyLoadError
from cordum.policy.raw import RULE_LISTS, as_written, present_key, raw_checks, source_key
from cordum.policy.schema import DIALECT_CORDUM, DIALECTS, PolicyDocument
from cordum.policy.source import ParsedYaml
from cordum.policy.translate import describe_value, translate_errors

__all__ = ["RULE_LISTS", "LoadedDocument", "SourceRef", "translate_errors", "validate_document"]


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
        return self.source.issue_at(loc, code, message, **extra)


def validate_document(
    parsed: ParsedYaml, *, dialect: str = DIALECT_CORDUM, strict: bool = False
) -> LoadedDocument:
    """Validate parsed YAML as a policy document; raise :class:`PolicyLoadError` if it is not."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
    if not isinstance(parsed.data, dict):
        raise PolicyLoadError(
            [
                parsed.issue_at(
                    (),
                    "not_a_mapping",
                    f"a policy is a mapping of settings, got {describe_value(parsed.data)}",
                    hint="start with `version:`, `default_decision:` and `rules:`",
                )
            ]
        )
    raw_errors, notes = raw_checks(parsed, strict)
    data = as_written(parsed)
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
    return LoadedDocument(
        name=loaded.name,
        document=document,
        source=parsed,
        rule_sources=loaded.rule_sources,
        tenant_sources=loaded.tenant_sources,
        notes=tuple(notes),
    )


def _in_file_order(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.column or 0))


def _validated_checks(loaded: LoadedDocument) -> list[PolicyIssue]:
    errors: list[PolicyIssue] = []
    raw = loaded.source.data
    for kind in RULE_LISTS:
        for index, rule in enumerate(getattr(loaded.document, kind)):
            match_key = present_key(raw, (kind, index), ("match", "when"))
            for key, value in rule.match.implicit_labels().items():
                loc = (kind, index, match_key, source_key(raw, (kind, index, match_key), key))
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
                elif not (
                    isinstance(value, list) and value and all(isinstance(v, str) for v in value)
                ):
                    errors.append(
                        loaded.issue_at(
                            loc,
                            "bad_label_value",
                            f"`{key}` is compared with the job label `{key}`, so its value must"
                            f" be text or a non-empty list of text, got {describe_value(value)}",
                            rule_id=rule.id,
                            field=f"{match_key}.{key}",
                            hint="an empty list never matches, which silently disables the rule",
                        )
                    )
    return errors
