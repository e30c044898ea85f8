"""The original's per-tenant topic lists, turned into ordinary rules.

When a policy has no ``rules``, each ``tenants.<name>`` entry becomes deny rules for its
``deny_topics``, deny rules for MCP calls its ``mcp`` filter refuses, then allow rules for
its ``allow_topics`` (denies first, as in the original). Topics in neither list fall
through to ``default_decision``. Unlike the original, the MCP filter never switches a
topic deny off: there it gated the deny rules too, so a job calling a refused tool
slipped past the tenant's deny list to the default decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cordum.models import Budgets, Constraints, Decision
from cordum.policy.schema import MCP_DIMENSIONS, LegacyTenant, Match, Rule
from cordum.policy.validate import SourceRef


def legacy_rules(
    tenants: Mapping[str, LegacyTenant], sources: Mapping[str, SourceRef]
) -> tuple[tuple[Rule, ...], tuple[SourceRef, ...]]:
    """Rules (and where each came from) equivalent to the legacy tenant lists."""
    rules: list[Rule] = []
    origins: list[SourceRef] = []
    for name in sorted(tenants):
        tenant = tenants[name]
        made = [*_deny_rules(name, tenant), *_mcp_rules(name, tenant), *_allow_rules(name, tenant)]
        rules.extend(made)
        origins.extend([sources.get(name, SourceRef("<policy>", 0))] * len(made))
    return tuple(rules), tuple(origins)


def _rule(rule_id: str, match: Match, decision: Decision, reason: str, **extra: Any) -> Rule:
    # The parts were validated when the tenant lists were loaded.
    return Rule.model_construct(id=rule_id, match=match, decision=decision, reason=reason, **extra)


def _deny_rules(name: str, tenant: LegacyTenant) -> list[Rule]:
    return [
        _rule(
            f"legacy:{name}:deny:{number}",
            Match.model_construct(tenants=(name,), topics=(topic,)),
            Decision.DENY,
            f"topic `{topic}` is denied for tenant `{name}`",
        )
        for number, topic in enumerate(tenant.deny_topics, start=1)
    ]


def _mcp_rules(name: str, tenant: LegacyTenant) -> list[Rule]:
    """Deny the tenant's MCP calls that fail its filter; calls that pass go on to the allows.

    The filter does not gate the deny rules: a denied topic stays denied whatever MCP
    labels the job carries, or none.
    """
    if tenant.mcp is None:
        return []
    rules = []
    for dimension in MCP_DIMENSIONS:
        allow, deny = tenant.mcp.lists(dimension)
        label = f"mcp.{dimension}"
        if deny:
            rules.append(
                _rule(
                    f"legacy:{name}:mcp-deny:{dimension}",
                    Match.model_construct(tenants=(name,), labels={label: deny}),
                    Decision.DENY,
                    f"this MCP {dimension} is denied for tenant `{name}`",
                )
            )
        if allow:
            rules.append(
                _rule(
                    f"legacy:{name}:mcp-allow:{dimension}",
                    Match.model_construct(tenants=(name,), label_allowlist={label: allow}),
                    Decision.DENY,
                    f"this MCP {dimension} is not on tenant `{name}`'s allow list",
                )
            )
    return rules


def _allow_rules(name: str, tenant: LegacyTenant) -> list[Rule]:
    constraints = None
    if tenant.max_concurrent_jobs is not None:
        constraints = Constraints(budgets=Budgets(max_concurrent_jobs=tenant.max_concurrent_jobs))
    decision = Decision.ALLOW if constraints is None else Decision.ALLOW_WITH_CONSTRAINTS
    return [
        _rule(
            f"legacy:{name}:allow:{number}",
            Match.model_construct(tenants=(name,), topics=(topic,)),
            decision,
            f"topic `{topic}` is allowed for tenant `{name}`",
            constraints=constraints,
        )
        for number, topic in enumerate(tenant.allow_topics, start=1)
    ]
