"""The rule index: which rules can possibly match a job, in policy order.

First match wins, so evaluation must visit rules in order, but it need not visit rules
that cannot match. Every rule's conditions on single-valued fields (topic, tenant,
capability, pack, actor) are indexed into bitsets: bit i set means "rule i does not rule
this job out". ANDing the bitsets of a job's values leaves the candidates, visited lowest
bit first. Topic globs are bucketed by their literal prefix, so a topic only tests globs
that could match it.

Candidate lists are remembered per combination of indexed values: agents send the same
few topics over and over, and a remembered answer is one dictionary lookup. The memory
is bounded, and the answer is exact, because it depends on nothing but those values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

from cordum.policy.conditions import Condition, MembershipCondition, TopicCondition
from cordum.policy.globs import compile_glob, is_literal, literal_prefix
from cordum.policy.job_input import PolicyInput
from cordum.policy.schema import MEMBERSHIP_FIELDS

MAX_REMEMBERED = 65_536


class IndexedRule(Protocol):
    """What the index needs to know about a rule."""

    conditions: tuple[Condition, ...]


R = TypeVar("R", bound=IndexedRule)


class RuleIndex(Generic[R]):
    """Candidate rules for a job, in policy order."""

    def __init__(self, rules: Sequence[R], remember: int = MAX_REMEMBERED) -> None:
        self._rules = tuple(rules)
        everything = (1 << len(self._rules)) - 1
        self._remember = remember
        self._cache: dict[Any, tuple[R, ...]] = {}
        self._topic_cache: dict[str, int] = {}
        self._build_topics(everything)
        self._dims: list[tuple[str, dict[str, int], int]] = []
        for attr in MEMBERSHIP_FIELDS.values():
            by_value, unconstrained = self._member_masks(attr)
            if unconstrained != everything:
                self._dims.append((attr, by_value, unconstrained))
        key_attrs = (["topic"] if self._topic_on else []) + [d[0] for d in self._dims]
        self._key: Callable[[PolicyInput], Any] | None = (
            attrgetter(*key_attrs) if key_attrs else None
        )
        self._everything = everything

    def candidates(self, job: PolicyInput) -> tuple[R, ...]:
        """Rules that may match ``job``, in policy order (a superset of the real matches)."""
        if self._key is None:
            return self._rules
        key = self._key(job)
        found = self._cache.get(key)
        if found is None:
            found = self._compute(job)
            if len(self._cache) >= self._remember:
                self._cache.clear()
            self._cache[key] = found
        return found

    def candidates_uncached(self, job: PolicyInput) -> tuple[R, ...]:
        """Same answer as :meth:`candidates`, always computed (benchmarks, tests)."""
        if self._key is None:
            return self._rules
        return self._compute(job, remember_topic=False)

    def _compute(self, job: PolicyInput, remember_topic: bool = True) -> tuple[R, ...]:
        mask = self._topic_mask(job.topic, remember_topic) if self._topic_on else self._everything
        for attr, by_value, unconstrained in self._dims:
            mask &= by_value.get(getattr(job, attr), 0) | unconstrained
            if not mask:
                return ()
        rules = self._rules
        found = []
        while mask:
            low = mask & -mask
            found.append(rules[low.bit_length() - 1])
            mask ^= low
        return tuple(found)

    # --- topics ----------------------------------------------------------------------

    def _build_topics(self, everything: int) -> None:
        self._topic_unconstrained = 0
        self._topic_literal: dict[str, int] = {}
        self._topic_prefixed: dict[str, list[tuple[int, Callable[[str], bool]]]] = {}
        for position, rule in enumerate(self._rules):
            bit = 1 << position
            topics = next((c for c in rule.conditions if isinstance(c, TopicCondition)), None)
            if topics is None:
                self._topic_unconstrained |= bit
                continue
            for glob in topics.globs:
                if is_literal(glob):
                    self._topic_literal[glob] = self._topic_literal.get(glob, 0) | bit
                else:
                    bucket = self._topic_prefixed.setdefault(literal_prefix(glob), [])
                    bucket.append((bit, compile_glob(glob)))
        self._prefix_lengths = sorted({len(prefix) for prefix in self._topic_prefixed})
        self._topic_on = self._topic_unconstrained != everything

    def _topic_mask(self, topic: str, remember: bool) -> int:
        mask = self._topic_cache.get(topic)
        if mask is not None:
            return mask
        mask = self._topic_unconstrained | self._topic_literal.get(topic, 0)
        for length in self._prefix_lengths:
            if length > len(topic):
                break
            for bit, matches in self._topic_prefixed.get(topic[:length], ()):
                if not mask & bit and matches(topic):
                    mask |= bit
        if remember:
            if len(self._topic_cache) >= self._remember:
                self._topic_cache.clear()
            self._topic_cache[topic] = mask
        return mask

    # --- single-valued fields ---------------------------------------------------------

    def _member_masks(self, attr: str) -> tuple[dict[str, int], int]:
        by_value: dict[str, int] = {}
        unconstrained = 0
        for position, rule in enumerate(self._rules):
            bit = 1 << position
            member = next(
                (
                    c
                    for c in rule.conditions
                    if isinstance(c, MembershipCondition) and c.attr == attr
                ),
                None,
            )
            if member is None:
                unconstrained |= bit
                continue
            for value in member.values:
                by_value[value] = by_value.get(value, 0) | bit
        return by_value, unconstrained
