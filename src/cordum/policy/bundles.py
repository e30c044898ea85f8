"""Merging a base policy and its fragments (bundles) into one document.

Bundles are merged in key order. Scalars keep the first value set (the base wins);
a rule whose id already exists replaces the earlier rule in place, so a fragment can
tighten one rule without reordering the policy. Two bundles that disagree about
``default_decision`` are an error, not a silent pick: that setting decides every job
no rule covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cordum.policy.errors import PolicyIssue, PolicyLoadError
from cordum.policy.schema import LegacyTenant, McpFilter, PolicyDocument
from cordum.policy.validate import RULE_LISTS, LoadedDocument, SourceRef


@dataclass(frozen=True)
class MergedPolicy:
    """The document that will be evaluated, with where each piece came from."""

    document: PolicyDocument
    rule_sources: dict[str, tuple[SourceRef, ...]]
    tenant_sources: dict[str, SourceRef]
    notes: tuple[PolicyIssue, ...]
    bundle_ids: tuple[str, ...]


def merge_documents(loaded: Sequence[LoadedDocument]) -> MergedPolicy:
    """Fold bundles (already in key order) into one document; the first is the base."""
    if not loaded:
        raise PolicyLoadError(
            [
                PolicyIssue(
                    code="no_bundles", message="no policy bundles to load", hint="add a .yaml file"
                )
            ]
        )
    _check_default_decisions(loaded)
    base = loaded[0]
    notes = [note for item in loaded for note in item.notes]
    update: dict[str, Any] = {
        "version": _first(item.document.version for item in loaded),
        "description": _first(item.document.description for item in loaded),
        "default_tenant": _first(item.document.default_tenant for item in loaded),
        "default_decision": next(
            (
                i.document.default_decision
                for i in loaded
                if "default_decision" in i.document.model_fields_set
            ),
            base.document.default_decision,
        ),
        "label_keys": tuple(sorted({key for item in loaded for key in item.document.label_keys})),
    }
    rule_sources: dict[str, tuple[SourceRef, ...]] = {}
    for kind in RULE_LISTS:
        merged_rules, sources = _merge_rules(kind, loaded, notes)
        update[kind] = merged_rules
        rule_sources[kind] = sources
    tenants, tenant_sources = _merge_tenants(loaded)
    update["tenants"] = tenants
    if update["rules"] and tenants:
        notes.append(_ignored_tenants(tenants, tenant_sources))
    return MergedPolicy(
        document=base.document.model_copy(update=update),
        rule_sources=rule_sources,
        tenant_sources=tenant_sources,
        notes=tuple(notes),
        bundle_ids=tuple(item.name for item in loaded),
    )


def _ignored_tenants(
    tenants: dict[str, LegacyTenant], sources: dict[str, SourceRef]
) -> PolicyIssue:
    """Legacy tenant lists next to rules are ignored, as in the original.

    Ignoring an allow list only refuses more; ignoring a deny list (or an MCP filter)
    would silently let through what its author meant to stop, so that is an error.
    """
    refusing = sorted(name for name, tenant in tenants.items() if tenant.deny_topics or tenant.mcp)
    name = refusing[0] if refusing else sorted(tenants)[0]
    hint = f"write them as rules, e.g. `tenants: [{name}]`, `topics: [...]`, `decision: deny`"
    if refusing:
        raise PolicyLoadError(
            [
                PolicyIssue(
                    code="legacy_tenants_ignored",
                    message=f"the deny list of tenant `{name}` would be ignored: legacy tenant"
                    " lists only apply to policies without rules",
                    file=sources[name].file,
                    line=sources[name].line,
                    hint=hint,
                )
            ]
        )
    return PolicyIssue(
        code="legacy_tenants_ignored",
        message="`tenants` is ignored because the policy has rules",
        file=sources[name].file,
        line=sources[name].line,
        severity="warning",
        hint=hint,
    )


def _first(values: Any) -> str:
    return next((value for value in values if value), "")


def _check_default_decisions(loaded: Sequence[LoadedDocument]) -> None:
    setters = [item for item in loaded if "default_decision" in item.document.model_fields_set]
    for item in setters[1:]:
        first = setters[0]
        if item.document.default_decision != first.document.default_decision:
            raise PolicyLoadError(
                [
                    item.issue_at(
                        ("default_decision",),
                        "conflicting_default_decision",
                        f"bundle `{item.name}` sets default_decision"
                        f" {item.document.default_decision.value}, but `{first.name}` sets"
                        f" {first.document.default_decision.value}",
                        field="default_decision",
                        hint="set default_decision in one bundle only (usually the base)",
                    )
                ]
            )


def _merge_rules(
    kind: str, loaded: Sequence[LoadedDocument], notes: list[PolicyIssue]
) -> tuple[tuple[Any, ...], tuple[SourceRef, ...]]:
    rules: list[Any] = []
    sources: list[SourceRef] = []
    position: dict[str, int] = {}
    for item in loaded:
        for rule, source in zip(getattr(item.document, kind), item.rule_sources[kind], strict=True):
            if rule.id in position:
                index = position[rule.id]
                notes.append(
                    PolicyIssue(
                        code="rule_replaced",
                        message=f"replaces the rule of the same id from {sources[index]}",
                        file=source.file,
                        line=source.line,
                        rule_id=rule.id,
                        severity="info",
                    )
                )
                rules[index] = rule
                sources[index] = source
            else:
                position[rule.id] = len(rules)
                rules.append(rule)
                sources.append(source)
    return tuple(rules), tuple(sources)


def _merge_tenants(
    loaded: Sequence[LoadedDocument],
) -> tuple[dict[str, LegacyTenant], dict[str, SourceRef]]:
    tenants: dict[str, LegacyTenant] = {}
    sources: dict[str, SourceRef] = {}
    for item in loaded:
        for name, tenant in item.document.tenants.items():
            if name not in tenants:
                tenants[name] = tenant
                sources[name] = item.tenant_sources[name]
                continue
            current = tenants[name]
            limits = [v for v in (current.max_concurrent_jobs, tenant.max_concurrent_jobs) if v]
            tenants[name] = current.model_copy(
                update={
                    "allow_topics": current.allow_topics + tenant.allow_topics,
                    "deny_topics": current.deny_topics + tenant.deny_topics,
                    "max_concurrent_jobs": min(limits) if limits else None,
                    "mcp": _merge_mcp(current.mcp, tenant.mcp),
                }
            )
    return tenants, sources


def _merge_mcp(first: McpFilter | None, second: McpFilter | None) -> McpFilter | None:
    if first is None or second is None:
        return first or second
    merged = {
        name: tuple(sorted(set(getattr(first, name)) | set(getattr(second, name))))
        for name in McpFilter.model_fields
    }
    return McpFilter(**merged)
