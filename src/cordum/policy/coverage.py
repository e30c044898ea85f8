"""Reasoning about what rules match: coverage proofs and witness jobs.

``covers(a, b)`` proves that every job matching rule ``b`` also matches rule ``a``. It is
sound but not complete: when it cannot prove coverage it says False, so lint findings
built on it are never false alarms. ``witness(rule)`` builds one concrete job the rule
matches, checked against the rule's own conditions.
"""

from __future__ import annotations

from collections.abc import Mapping

from cordum.policy.globs import example_topic, glob_covers
from cordum.policy.job_input import SECRETS_TAG, PolicyInput
from cordum.policy.schema import MCP_DIMENSIONS, MEMBERSHIP_FIELDS, Match, RiskTagsCondition

_EXACT_FIELDS = ("label_allowlist", "label_threshold", "secrets_present", "mcp")


def covers(general: Match, specific: Match) -> bool:
    """True when every job matching ``specific`` provably matches ``general``."""
    if general.topics and not (
        specific.topics
        and all(any(glob_covers(g, s) for g in general.topics) for s in specific.topics)
    ):
        return False
    for name in MEMBERSHIP_FIELDS:
        wanted: tuple[str, ...] = getattr(general, name)
        if wanted and not (getattr(specific, name) and set(getattr(specific, name)) <= set(wanted)):
            return False
    if not _tags_cover(general.risk_tags, specific.risk_tags):
        return False
    if not set(general.requires) <= set(specific.requires):
        return False
    if not _labels_cover(general.labels, specific.labels):
        return False
    if not _labels_cover(general.implicit_labels(), specific.implicit_labels()):
        return False
    return all(
        getattr(general, name) in (None, {}) or getattr(general, name) == getattr(specific, name)
        for name in _EXACT_FIELDS
    )


def _tags_cover(general: RiskTagsCondition | None, specific: RiskTagsCondition | None) -> bool:
    if general is None:
        return True
    guaranteed = set(specific.all) if specific is not None else set()
    if not set(general.all) <= guaranteed:
        return False
    if not general.any:
        return True
    if guaranteed & set(general.any):
        return True
    return specific is not None and bool(specific.any) and set(specific.any) <= set(general.any)


def _labels_cover(general: Mapping[str, object], specific: Mapping[str, object]) -> bool:
    for key, values in general.items():
        narrower = specific.get(key)
        if narrower is None or not set(_as_tuple(narrower)) <= set(_as_tuple(values)):
            return False
    return True


def _as_tuple(values: object) -> tuple[object, ...]:
    if isinstance(values, list | tuple):
        return tuple(values)
    return (values,)


def witness(match: Match) -> PolicyInput:
    """A concrete job built to meet ``match`` (callers check it with the rule's conditions)."""
    labels: dict[str, str] = {key: values[0] for key, values in match.labels.items()}
    for key, values in match.implicit_labels().items():
        if isinstance(values, list) and values:
            labels.setdefault(key, str(values[0]))
    for key in match.label_allowlist:
        labels.setdefault(key, "value-outside-the-allowlist")
    for key, threshold in match.label_threshold.items():
        labels.setdefault(key, str(threshold + 1))
    if match.mcp is not None:
        for dimension in MCP_DIMENSIONS:
            allow, _ = match.mcp.lists(dimension)
            labels.setdefault(f"mcp.{dimension}", allow[0] if allow else "not-denied")
    tags = set(match.risk_tags.all) if match.risk_tags is not None else set()
    if match.risk_tags is not None and match.risk_tags.any:
        tags.add(match.risk_tags.any[0])
    if match.secrets_present:
        tags.add(SECRETS_TAG)
    return PolicyInput(
        topic=example_topic(match.topics[0]) if match.topics else "job.example",
        tenant=_first(match.tenants),
        capability=_first(match.capabilities),
        pack_id=_first(match.pack_ids),
        actor_id=_first(match.actor_ids),
        actor_type=_first(match.actor_types),
        risk_tags=frozenset(tags),
        requires=frozenset(match.requires),
        labels=labels,
    )


def _first(values: tuple[str, ...]) -> str:
    return values[0] if values else ""
