"""Match conditions, compiled: a fast test for evaluation and an explanation for ``explain``.

Each condition is built once from a validated match block. ``test`` is what evaluation
calls, millions of times; ``why_not`` is only called by ``explain`` for a failed test and
says, in words, which value failed and what the rule wanted. Both read the same data, so
an explanation can never disagree with the decision it explains.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cordum.policy.globs import compile_glob
from cordum.policy.job_input import PolicyInput
from cordum.policy.schema import MCP_DIMENSIONS, MEMBERSHIP_FIELDS, Match, McpFilter


def _listed(values: tuple[str, ...] | frozenset[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


class Condition:
    """One field of a match block."""

    field: str = ""
    indexed_attr: str | None = None

    def test(self, job: PolicyInput) -> bool:
        """True when the job meets this condition."""
        raise NotImplementedError

    def why_not(self, job: PolicyInput) -> str:
        """Why the job does not meet it (only called after ``test`` returned False)."""
        raise NotImplementedError


class TopicCondition(Condition):
    """The topic matches one of the globs."""

    field = "topics"
    indexed_attr = "topic"

    def __init__(self, globs: tuple[str, ...]) -> None:
        self.globs = globs
        self.matchers = tuple(compile_glob(glob) for glob in globs)

    def test(self, job: PolicyInput) -> bool:
        topic = job.topic
        return any(match(topic) for match in self.matchers)

    def why_not(self, job: PolicyInput) -> str:
        return f"topic `{job.topic}` matches none of {_listed(self.globs)}"


class MembershipCondition(Condition):
    """A single-valued job field (tenant, capability, ...) is one of the listed values."""

    def __init__(self, field: str, attr: str, values: tuple[str, ...]) -> None:
        self.field = field
        self.indexed_attr = attr
        self.attr = attr
        self.values = frozenset(values)

    def test(self, job: PolicyInput) -> bool:
        return bool(getattr(job, self.attr) in self.values)

    def why_not(self, job: PolicyInput) -> str:
        value = getattr(job, self.attr)
        if not value:
            return f"job has no {self.attr}; the rule wants one of {_listed(self.values)}"
        return f"{self.attr} `{value}` is not one of {_listed(self.values)}"


class AllOfCondition(Condition):
    """The job's tags (or requires) include every listed item."""

    def __init__(self, field: str, attr: str, values: tuple[str, ...]) -> None:
        self.field = field
        self.attr = attr
        self.values = frozenset(values)

    def test(self, job: PolicyInput) -> bool:
        have: frozenset[str] = getattr(job, self.attr)
        return self.values <= have

    def why_not(self, job: PolicyInput) -> str:
        have: frozenset[str] = getattr(job, self.attr)
        return f"missing {_listed(self.values - have)} (job has {_listed(have)})"


class AnyOfCondition(Condition):
    """The job's tags include at least one listed item."""

    def __init__(self, field: str, attr: str, values: tuple[str, ...]) -> None:
        self.field = field
        self.attr = attr
        self.values = frozenset(values)

    def test(self, job: PolicyInput) -> bool:
        return not self.values.isdisjoint(getattr(job, self.attr))

    def why_not(self, job: PolicyInput) -> str:
        have: frozenset[str] = getattr(job, self.attr)
        return f"job has none of {_listed(self.values)} (job has {_listed(have)})"


class LabelsCondition(Condition):
    """Every listed label is present with one of its listed values."""

    field = "labels"

    def __init__(self, labels: dict[str, tuple[str, ...]], field: str = "labels") -> None:
        self.field = field
        self.pairs = tuple((key, frozenset(values)) for key, values in sorted(labels.items()))

    def test(self, job: PolicyInput) -> bool:
        labels = job.labels
        return all(labels.get(key) in values for key, values in self.pairs)

    def why_not(self, job: PolicyInput) -> str:
        for key, values in self.pairs:
            value = job.labels.get(key)
            if value is None:
                return f"job has no label `{key}`; the rule wants {_listed(values)}"
            if value not in values:
                return f"label `{key}` is `{value}`, not one of {_listed(values)}"
        return "labels match"


class ImplicitLabelCondition(Condition):
    """A non-field match key: the job label of that name, else the input field, is listed."""

    def __init__(self, key: str, values: tuple[str, ...]) -> None:
        self.field = key
        self.key = key
        self.values = frozenset(values)

    def test(self, job: PolicyInput) -> bool:
        return job.label_or_field(self.key) in self.values

    def why_not(self, job: PolicyInput) -> str:
        value = job.label_or_field(self.key)
        if value is None:
            return f"job has no label or input field `{self.key}`"
        return f"`{self.key}` is `{value}`, not one of {_listed(self.values)}"


class LabelAllowlistCondition(Condition):
    """Some listed label is present with a value outside its allowed values."""

    field = "label_allowlist"

    def __init__(self, allowlist: dict[str, tuple[str, ...]]) -> None:
        self.allowlist = tuple(
            (key, frozenset(values)) for key, values in sorted(allowlist.items())
        )

    def test(self, job: PolicyInput) -> bool:
        labels = job.labels
        for key, allowed in self.allowlist:
            value = labels.get(key)
            if value is not None and value not in allowed:
                return True
        return False

    def why_not(self, job: PolicyInput) -> str:
        parts = []
        for key, allowed in self.allowlist:
            value = job.labels.get(key)
            if value is None:
                parts.append(f"label `{key}` absent")
            else:
                parts.append(f"label `{key}`=`{value}` is allowed by {_listed(allowed)}")
        return "; ".join(parts)


class LabelThresholdCondition(Condition):
    """Some listed label has a numeric value above its threshold."""

    field = "label_threshold"

    def __init__(self, thresholds: dict[str, float]) -> None:
        self.thresholds = tuple(sorted(thresholds.items()))

    def test(self, job: PolicyInput) -> bool:
        labels = job.labels
        for key, threshold in self.thresholds:
            number = _number(labels.get(key))
            if number is not None and number > threshold:
                return True
        return False

    def why_not(self, job: PolicyInput) -> str:
        parts = []
        for key, threshold in self.thresholds:
            raw = job.labels.get(key)
            number = _number(raw)
            if raw is None:
                parts.append(f"label `{key}` absent")
            elif number is None:
                parts.append(f"label `{key}`=`{raw}` is not a number")
            else:
                parts.append(f"label `{key}`={raw} is not above {threshold:g}")
        return "; ".join(parts)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.replace("_", ""))
    except ValueError:
        return None
    return None if math.isnan(number) else number


class SecretsCondition(Condition):
    """The job does (or does not) carry secret references."""

    field = "secrets_present"

    def __init__(self, expected: bool) -> None:
        self.expected = expected

    def test(self, job: PolicyInput) -> bool:
        return job.secrets_present() is self.expected

    def why_not(self, job: PolicyInput) -> str:
        if self.expected:
            return "job carries no secret:// reference and no `secrets` tag"
        return "job carries secret:// references or the `secrets` tag"


class McpCondition(Condition):
    """The MCP call (labels mcp.server, mcp.tool, ...) passes the allow/deny lists."""

    field = "mcp"

    def __init__(self, mcp: McpFilter) -> None:
        self.checks = tuple(
            (dimension, frozenset(allow), frozenset(deny))
            for dimension in MCP_DIMENSIONS
            for allow, deny in (mcp.lists(dimension),)
            if allow or deny
        )

    def test(self, job: PolicyInput) -> bool:
        return self._failure(job) is None

    def why_not(self, job: PolicyInput) -> str:
        return self._failure(job) or "mcp call passes"

    def _failure(self, job: PolicyInput) -> str | None:
        for dimension, allow, deny in self.checks:
            value = job.labels.get(f"mcp.{dimension}", "")
            if value and value in deny:
                return f"mcp {dimension} `{value}` is on the deny list"
            if allow and value not in allow:
                shown = f"`{value}`" if value else "(none)"
                return f"mcp {dimension} {shown} is not on the allow list {_listed(allow)}"
        return None


def compile_match(match: Match) -> tuple[Condition, ...]:
    """All conditions of a match block, cheapest and most selective first."""
    conditions: list[Condition] = []
    if match.topics:
        conditions.append(TopicCondition(match.topics))
    for field, attr in MEMBERSHIP_FIELDS.items():
        values: tuple[str, ...] = getattr(match, field)
        if values:
            conditions.append(MembershipCondition(field, attr, values))
    if match.risk_tags is not None:
        if match.risk_tags.all:
            conditions.append(AllOfCondition("risk_tags", "risk_tags", match.risk_tags.all))
        if match.risk_tags.any:
            conditions.append(AnyOfCondition("risk_tags.any", "risk_tags", match.risk_tags.any))
    if match.requires:
        conditions.append(AllOfCondition("requires", "requires", match.requires))
    if match.labels:
        conditions.append(LabelsCondition(match.labels))
    for key, values in sorted(match.implicit_labels().items()):
        conditions.append(ImplicitLabelCondition(key, tuple(values)))
    if match.label_allowlist:
        conditions.append(LabelAllowlistCondition(match.label_allowlist))
    if match.label_threshold:
        conditions.append(LabelThresholdCondition(match.label_threshold))
    if match.mcp is not None:
        conditions.append(McpCondition(match.mcp))
    if match.secrets_present is not None:
        conditions.append(SecretsCondition(match.secrets_present))
    return tuple(conditions)


def residual_tests(conditions: tuple[Condition, ...]) -> tuple[Callable[[PolicyInput], bool], ...]:
    """The tests the rule index does not already guarantee."""
    return tuple(c.test for c in conditions if c.indexed_attr is None)


def first_failure(conditions: tuple[Condition, ...], job: PolicyInput) -> Condition | None:
    """The first condition the job fails, or None when all hold."""
    for condition in conditions:
        if not condition.test(job):
            return condition
    return None
