"""A job as the kernel sees it: normalized once, then read by every condition.

Strings are compared trimmed and case-insensitively, so they are normalized here, once
per evaluation, instead of in every condition. Work only some rules need (walking the
input for ``secret://`` references, collecting text for content scanners) is done lazily
and remembered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from cordum.models import Job
from cordum.policy.errors import InvalidJobError

SECRET_REFERENCE = "secret://"
SECRETS_TAG = "secrets"
MAX_SCAN_BYTES = 2 * 1024 * 1024
_JOB_FIELDS = frozenset(Job.model_fields) | {"tenant"}


class PolicyInput:
    """The policy-relevant fields of a job, normalized."""

    __slots__ = (
        "_secrets",
        "_size",
        "_texts",
        "actor_id",
        "actor_type",
        "capability",
        "context",
        "labels",
        "pack_id",
        "prompt",
        "requires",
        "risk_tags",
        "tenant",
        "topic",
    )

    def __init__(
        self,
        *,
        topic: str,
        tenant: str = "",
        capability: str = "",
        actor_id: str = "",
        actor_type: str = "",
        pack_id: str = "",
        risk_tags: frozenset[str] = frozenset(),
        requires: frozenset[str] = frozenset(),
        labels: dict[str, str] | None = None,
        context: Any = None,
        prompt: str | None = None,
    ) -> None:
        self.topic = topic
        self.tenant = tenant
        self.capability = capability
        self.actor_id = actor_id
        self.actor_type = actor_type
        self.pack_id = pack_id
        self.risk_tags = risk_tags
        self.requires = requires
        self.labels = labels if labels is not None else {}
        self.context = context
        self.prompt = prompt
        self._secrets: bool | None = None
        self._texts: tuple[list[tuple[str, str]], bool] | None = None
        self._size: int | None = None

    def label_or_field(self, key: str) -> str | None:
        """The job label ``key``, else the top-level input field of that name, as text."""
        value = self.labels.get(key)
        if value is not None:
            return value
        if isinstance(self.context, dict):
            raw = self.context.get(key)
            if isinstance(raw, bool):
                return "true" if raw else "false"
            if isinstance(raw, str | int | float):
                return str(raw).strip().lower()
        return None

    def secrets_present(self) -> bool:
        """True when the job carries ``secret://`` references or the ``secrets`` risk tag."""
        if self._secrets is None:
            self._secrets = SECRETS_TAG in self.risk_tags or any(
                SECRET_REFERENCE in value for value in self.labels.values()
            )
            if not self._secrets:
                texts, _ = self.texts()
                self._secrets = any(SECRET_REFERENCE in text.lower() for _, text in texts)
        return self._secrets

    def texts(self) -> tuple[list[tuple[str, str]], bool]:
        """(path, text) for every string in the prompt and input, and whether it was cut.

        At most :data:`MAX_SCAN_BYTES` of text is collected; the flag tells scanners the
        rest was not looked at, so they can fail closed.
        """
        if self._texts is None:
            collected: list[tuple[str, str]] = []
            budget = MAX_SCAN_BYTES
            truncated = False
            sources: list[tuple[str, Any]] = [("prompt", self.prompt), ("context", self.context)]
            for path, text in (
                pair for root, value in sources for pair in iter_strings(root, value)
            ):
                if len(text) > budget:
                    collected.append((path, text[:budget]))
                    truncated = True
                    break
                budget -= len(text)
                collected.append((path, text))
            self._texts = (collected, truncated)
        return self._texts

    def input_size(self) -> int:
        """Size in bytes of the input as JSON (what ``input_size_gt`` compares)."""
        if self._size is None:
            encoded = json.dumps(self.context, default=str, ensure_ascii=False).encode()
            self._size = len(encoded) + len((self.prompt or "").encode())
        return self._size


def iter_strings(path: str, value: Any) -> Iterator[tuple[str, str]]:
    """Every string (keys included) in a JSON value, with a path to where it is."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                key_text = str(key)
                yield f"{where}.{key_text}", key_text
                stack.append((f"{where}.{key_text}", child))
        elif isinstance(item, list | tuple):
            for index in range(len(item) - 1, -1, -1):
                stack.append((f"{where}[{index}]", item[index]))


def to_policy_input(job: Any, default_tenant: str = "") -> PolicyInput:
    """Normalize a job given as a mapping, a :class:`~cordum.models.Job` or a PolicyInput."""
    if isinstance(job, PolicyInput):
        return job
    if isinstance(job, Mapping):
        return _from_mapping(job, default_tenant)
    if isinstance(job, Job):
        return _from_job(job, default_tenant)
    raise InvalidJobError("job", f"expected a mapping or a Job, got {type(job).__name__}")


def _from_mapping(job: Mapping[str, Any], default_tenant: str) -> PolicyInput:
    unknown = job.keys() - _JOB_FIELDS
    if unknown:
        raise InvalidJobError(
            sorted(unknown)[0], "unknown field (a misspelt field would be ignored)"
        )
    topic = job.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidJobError("topic", "is required and must be non-empty text")
    tenant = _text(job, "tenant_id") or _text(job, "tenant") or default_tenant
    labels = job.get("labels")
    return PolicyInput(
        topic=topic.strip().lower(),
        tenant=tenant,
        capability=_text(job, "capability"),
        actor_id=_text(job, "actor_id"),
        actor_type=_text(job, "actor_type"),
        pack_id=_text(job, "pack_id"),
        risk_tags=_tags(job, "risk_tags"),
        requires=_tags(job, "requires"),
        labels=_labels(labels) if labels is not None else {},
        context=job.get("context"),
        prompt=_prompt(job.get("prompt")),
    )


def _from_job(job: Job, default_tenant: str) -> PolicyInput:
    return PolicyInput(
        topic=job.topic.strip().lower(),
        tenant=(job.tenant_id or "").strip().lower() or default_tenant,
        capability=(job.capability or "").strip().lower(),
        actor_id=(job.actor_id or "").strip().lower(),
        actor_type=(job.actor_type or "").strip().lower(),
        pack_id=(job.pack_id or "").strip().lower(),
        risk_tags=frozenset(tag.strip().lower() for tag in job.risk_tags),
        requires=frozenset(item.strip().lower() for item in job.requires),
        labels=_labels(job.labels),
        context=job.context,
        prompt=job.prompt,
    )


def _text(job: Mapping[str, Any], name: str) -> str:
    value = job.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidJobError(name, f"must be text, got {type(value).__name__}")
    return value.strip().lower()


def _tags(job: Mapping[str, Any], name: str) -> frozenset[str]:
    value = job.get(name)
    if value is None:
        return frozenset()
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(tag, str) for tag in value
    ):
        raise InvalidJobError(name, "must be a list of text")
    return frozenset(tag.strip().lower() for tag in value)


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidJobError("labels", "must be a mapping of text to text")
    labels = {}
    for key, raw in value.items():
        if isinstance(raw, bool):
            text = "true" if raw else "false"
        elif isinstance(raw, str | int | float):
            text = str(raw)
        else:
            raise InvalidJobError(f"labels.{key}", "label values must be text")
        labels[str(key).strip().lower()] = text.strip().lower()
    return labels


def _prompt(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidJobError("prompt", "must be text")
