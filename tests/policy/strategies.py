"""Hypothesis strategies for random policies and jobs over small vocabularies.

Vocabularies are small on purpose: random rules and random jobs then overlap often, so
first-match order, shadowing and every match field are exercised, not just the default.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TOPICS = ["job.db.migrate", "job.db.drop", "job.k8s.delete", "job.k8s.scale", "job.slack.post"]
GLOBS = [
    *TOPICS,
    "job.*",
    "job.db.*",
    "job.k8s.*",
    "*",
    "job.?b.*",
    "job.[dk]*.*",
    "*.post",
    "job.k8s.[^s]*",
]
TENANTS = ["acme", "globex", "initech"]
CAPABILITIES = ["db.write", "db.read", "k8s.admin"]
PACKS = ["ops", "data"]
ACTORS = ["agent-1", "agent-2"]
ACTOR_TYPES = ["agent", "human", "service"]
TAGS = ["prod", "write", "destructive", "pii", "secrets"]
LABEL_KEYS = ["env", "team", "rows"]
LABEL_VALUES = ["prod", "staging", "a", "b", "5", "500", "many"]
TOOLS = ["shell", "read_file", "write_file"]
DECISIONS = ["allow", "deny", "require_approval", "throttle", "allow_with_constraints"]


def _some(values: list[str], max_size: int = 2) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=max_size, unique=True)


def matches() -> st.SearchStrategy[dict[str, Any]]:
    """A random match block using every kind of field."""
    return st.fixed_dictionaries(
        {},
        optional={
            "topics": _some(GLOBS, 3),
            "tenants": _some(TENANTS),
            "capabilities": _some(CAPABILITIES),
            "pack_ids": _some(PACKS, 1),
            "actor_ids": _some(ACTORS, 1),
            "actor_types": _some(ACTOR_TYPES),
            "risk_tags": st.one_of(_some(TAGS, 3), st.fixed_dictionaries({"any": _some(TAGS, 3)})),
            "requires": _some(["net", "gpu"], 2),
            "labels": st.dictionaries(
                st.sampled_from(LABEL_KEYS),
                st.one_of(st.sampled_from(LABEL_VALUES), _some(LABEL_VALUES)),
                min_size=1,
                max_size=2,
            ),
            "label_allowlist": st.dictionaries(
                st.sampled_from(LABEL_KEYS), _some(LABEL_VALUES), min_size=1, max_size=1
            ),
            "label_threshold": st.dictionaries(
                st.just("rows"), st.sampled_from([1, 10, 100]), min_size=1, max_size=1
            ),
            "secrets_present": st.booleans(),
            "mcp": st.one_of(
                st.fixed_dictionaries({"allow_tools": _some(TOOLS)}),
                st.fixed_dictionaries({"deny_tools": _some(TOOLS)}),
            ),
            "squad": st.sampled_from(["a", "b"]),
        },
    )


@st.composite
def rules(draw: st.DrawFn, index: int) -> dict[str, Any]:
    """One random rule with id ``r<index>``."""
    decision = draw(st.sampled_from(DECISIONS))
    rule: dict[str, Any] = {"id": f"r{index}", "match": draw(matches()), "decision": decision}
    if draw(st.booleans()):
        rule["reason"] = f"reason {index}"
    if decision == "allow_with_constraints" or (decision == "allow" and draw(st.booleans())):
        rule["constraints"] = {"budgets": {"max_runtime_ms": draw(st.sampled_from([1000, 5000]))}}
    if decision == "throttle" or draw(st.integers(0, 5)) == 0:
        rule["velocity"] = {
            "max_requests": draw(st.integers(1, 3)),
            "window_seconds": 60,
            "key": draw(
                st.sampled_from(["tenant", "topic", "tenant:topic", "labels.team", "actor_id"])
            ),
        }
    return rule


@st.composite
def policies(draw: st.DrawFn, max_rules: int = 12) -> dict[str, Any]:
    """A random policy document as plain data."""
    count = draw(st.integers(0, max_rules))
    document: dict[str, Any] = {
        "version": draw(st.sampled_from(["1", "2026.11", "v3"])),
        "rules": [draw(rules(i)) for i in range(count)],
    }
    default = draw(st.sampled_from([None, "allow", "deny"]))
    if default is not None:
        document["default_decision"] = default
    if draw(st.booleans()):
        document["default_tenant"] = draw(st.sampled_from(TENANTS))
    return document


def jobs() -> st.SearchStrategy[dict[str, Any]]:
    """A random job over the same vocabularies (sometimes with values no rule names)."""
    return st.fixed_dictionaries(
        {"topic": st.sampled_from([*TOPICS, "job.other.thing", "JOB.DB.Migrate "])},
        optional={
            "tenant_id": st.sampled_from([*TENANTS, "umbrella"]),
            "capability": st.sampled_from(CAPABILITIES),
            "pack_id": st.sampled_from(PACKS),
            "actor_id": st.sampled_from(ACTORS),
            "actor_type": st.sampled_from(ACTOR_TYPES),
            "risk_tags": st.lists(st.sampled_from([*TAGS, "PROD"]), max_size=4),
            "requires": st.lists(st.sampled_from(["net", "gpu"]), max_size=2),
            "labels": st.dictionaries(
                st.sampled_from([*LABEL_KEYS, "mcp.tool", "squad"]),
                st.sampled_from([*LABEL_VALUES, *TOOLS, "secret://vault/x"]),
                max_size=3,
            ),
            "context": st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "squad": st.sampled_from(["a", "b"]),
                        "token": st.just("secret://vault/t"),
                    },
                ),
            ),
        },
    )
