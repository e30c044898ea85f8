"""A deliberately naive reference evaluator, written independently of the compiled engine.

It walks the validated document's rules in order and tests every field directly, with
no index, no caching and no shared code with ``cordum.policy.conditions``. Property
tests check that the compiled engine always agrees with it.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from cordum.models import Decision
from cordum.policy.schema import Match, PolicyDocument


def _norm(value: Any) -> str:
    return str(value).strip().lower() if value is not None else ""


def normalize(job: dict[str, Any], default_tenant: str) -> dict[str, Any]:
    labels = {}
    for key, value in (job.get("labels") or {}).items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        labels[_norm(key)] = text.strip().lower()
    return {
        "topic": _norm(job["topic"]),
        "tenant": _norm(job.get("tenant_id") or job.get("tenant")) or default_tenant,
        "capability": _norm(job.get("capability")),
        "pack_id": _norm(job.get("pack_id")),
        "actor_id": _norm(job.get("actor_id")),
        "actor_type": _norm(job.get("actor_type")),
        "risk_tags": {_norm(t) for t in job.get("risk_tags") or []},
        "requires": {_norm(t) for t in job.get("requires") or []},
        "labels": labels,
        "context": job.get("context"),
    }


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _secrets(job: dict[str, Any]) -> bool:
    if "secrets" in job["risk_tags"]:
        return True
    texts = list(job["labels"].values()) + _strings(job["context"])
    return any("secret://" in text.lower() for text in texts)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text.replace("_", ""))
    except ValueError:
        return None
    return None if number != number else number


def _label_or_field(job: dict[str, Any], key: str) -> str | None:
    if key in job["labels"]:
        return job["labels"][key]
    context = job["context"]
    if isinstance(context, dict) and key in context:
        value = context[key]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value).strip().lower()
    return None


def matches(match: Match, job: dict[str, Any]) -> bool:
    if match.topics and not any(
        fnmatch.fnmatchcase(job["topic"], glob.replace("[^", "[!")) for glob in match.topics
    ):
        return False
    for field, attr in (
        ("tenants", "tenant"),
        ("capabilities", "capability"),
        ("pack_ids", "pack_id"),
        ("actor_ids", "actor_id"),
        ("actor_types", "actor_type"),
    ):
        wanted = getattr(match, field)
        if wanted and job[attr] not in wanted:
            return False
    if match.risk_tags is not None:
        if not set(match.risk_tags.all) <= job["risk_tags"]:
            return False
        if match.risk_tags.any and not set(match.risk_tags.any) & job["risk_tags"]:
            return False
    if not set(match.requires) <= job["requires"]:
        return False
    for key, values in match.labels.items():
        if job["labels"].get(key) not in values:
            return False
    for key, values in match.implicit_labels().items():
        if _label_or_field(job, key) not in values:
            return False
    if match.label_allowlist and not any(
        key in job["labels"] and job["labels"][key] not in allowed
        for key, allowed in match.label_allowlist.items()
    ):
        return False
    if match.label_threshold and not any(
        (n := _number(job["labels"].get(key))) is not None and n > threshold
        for key, threshold in match.label_threshold.items()
    ):
        return False
    if match.mcp is not None:
        for dimension in ("server", "tool", "resource", "action"):
            allow = getattr(match.mcp, f"allow_{dimension}s")
            deny = getattr(match.mcp, f"deny_{dimension}s")
            value = job["labels"].get(f"mcp.{dimension}", "")
            if value and value in deny:
                return False
            if allow and value not in allow:
                return False
    return match.secrets_present is None or match.secrets_present == _secrets(job)


class NaiveEvaluator:
    """First match wins, velocity counted per rule and key with a stopped clock."""

    def __init__(self, document: PolicyDocument) -> None:
        self.document = document
        self.arrivals: dict[tuple[str, str], int] = {}

    def evaluate(self, job: dict[str, Any]) -> tuple[Decision, str | None]:
        normalized = normalize(job, self.document.default_tenant)
        for rule in self.document.rules:
            if not matches(rule.match, normalized):
                continue
            if rule.velocity is None:
                return rule.decision, rule.id
            key = ":".join(
                normalized["labels"].get(part[7:], "")
                if part.startswith("labels.")
                else normalized[part]
                for part in rule.velocity.key.split(":")
            )
            count = self.arrivals.get((rule.id, key), 0) + 1
            self.arrivals[(rule.id, key)] = count
            if count > rule.velocity.max_requests:
                return rule.decision, rule.id
        return self.document.default_decision, None
