"""The original's per-tenant topic lists, turned into ordinary rules.

When a policy has no ``rules``, each ``tenants.<name>`` entry becomes deny rules for its
``deny_topics`` followed by allow rules for its ``allow_topics`` (denies first, as in the
original). Topics in neither list fall through to ``default_decision``.
"""

from __future__ import annotations

from collections.abc import Mapping

from cordum.models import Budgets, Constraints, Decision
from cordum.policy.schema import LegacyTenant, Match, Rule
from cordum.policy.validate import SourceRef


def legacy_rules(
    tenants: Mapping[str, LegacyTenant], sources: Mapping[str, SourceRef]
) -> tuple[tuple[Rule, ...], tuple[SourceRef, ...]]:
    """Rules (and where each came from) equivalent to the legacy tenant lists."""
    rules: list[Rule] = []
    origins: list[SourceRef] = []
    for name in sorted(tenants):
        tenant = tenants[name]
        source = sources.get(name, SourceRef("<policy>", 0))
        for number, topic in enumerate(tenant.deny_topics, start=1):
            rules.append(
                Rule.model_construct(
                    id=f"legacy:{name}:deny:{number}",
                    match=Match.model_construct(tenants=(name,), topics=(topic,), mcp=tenant.mcp),
                    decision=Decision.DENY,
                    reason=f"topic `{topic}` is denied for tenant `{name}`",
                )
            )
            origins.append(source)
        constraints = None
        if tenant.max_concurrent_jobs is not None:
            constraints = Constraints(
                budgets=Budgets(max_concurrent_jobs=tenant.max_concurrent_jobs)
            )
        for number, topic in enumerate(tenant.allow_topics, start=1):
            rules.append(
                Rule.model_construct(
                    id=f"legacy:{name}:allow:{number}",
                    match=Match.model_construct(tenants=(name,), topics=(topic,), mcp=tenant.mcp),
                    decision=Decision.ALLOW
                    if constraints is None
                    else Decision.ALLOW_WITH_CONSTRAINTS,
                    reason=f"topic `{topic}` is allowed for tenant `{name}`",
                    constraints=constraints,
                )
            )
            origins.append(source)
    return tuple(rules), tuple(origins)
