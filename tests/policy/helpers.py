"""Small builders shared by the policy tests."""

from __future__ import annotations

from typing import Any

import yaml

from cordum.policy import InMemoryVelocityStore, Policy, load_text


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def dump(document: dict[str, Any]) -> str:
    """YAML text of a policy document (libyaml's emitter: fast)."""
    return yaml.dump(document, Dumper=yaml.CSafeDumper, sort_keys=False)


def policy(*rules: dict[str, Any], clock: FakeClock | None = None, **top: Any) -> Policy:
    """A policy made of ``rules`` (and top-level settings), with its own velocity counters."""
    document = {**top, "rules": list(rules)}
    store = InMemoryVelocityStore(clock=clock or FakeClock())
    return load_text(dump(document), velocity_store=store)


def rule(rule_id: str = "r", decision: str = "deny", **match: Any) -> dict[str, Any]:
    """A rule with the given match fields and a reason."""
    return {"id": rule_id, "match": match, "decision": decision, "reason": f"because {rule_id}"}


def decide(p: Policy, **job: Any) -> tuple[str, str | None]:
    """(decision, rule_id) for a job given as keyword arguments."""
    job.setdefault("topic", "job.test.run")
    record = p.evaluate(job)
    return record.decision.value, record.rule_id
