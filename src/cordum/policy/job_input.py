"""A job as the kernel sees it: normalized once, then read by every condition.

Strings are compared trimmed and case-insensitively, so they are normalized here, once
per evaluation, instead of in every condition. Work only some rules need (walking the
input for ``secret://`` references, collecting text for content scanners) is done lazily
and remembered.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from cordum.models import Job, label_text
from cordum.policy.errors import InvalidJobError

SECRET_REFERENCE = "secret://"
SECRETS_TAG = "secrets"
MAX_SCAN_CHARS = 2 * 1024 * 1024
_SECRET_REFERENCE = re.compile(re.escape(SECRET_REFERENCE), re.IGNORECASE)
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
        self._texts: tuple[list[Text], bool] | None = None
        self._size: int | None = None

    def label_or_field(self, key: str) -> str | None:
        """The job label ``key``, else the top-level input field of that name, as text."""
        value = self.labels.get(key)
        if value is not None:
            return value
        if isinstance(self.context, dict):
            raw = self.context.get(key)
            if raw is None:
                # Input field names are the agent's own; compare them case-insensitively too.
                raw = next(
                    (v for k, v in self.context.items() if str(k).strip().lower() == key), None
                )
            text = label_text(raw)
            return text.strip().lower() if text is not None else None
        return None

    def secrets_present(self) -> bool:
        """True when the job carries ``secret://`` references or the ``secrets`` risk tag.

        Unlike content scanning this reads all of the input, however large: a cheap
        substring search, and a reference hidden past the scan limit must still count.
        """
        if self._secrets is None:
            self._secrets = (
                SECRETS_TAG in self.risk_tags
                or any(SECRET_REFERENCE in value for value in self.labels.values())
                or any(
                    _SECRET_REFERENCE.search(text) is not None
                    for root, value in self._sources()
                    for _, text, _ in iter_strings(root, value)
                )
            )
        return self._secrets

    def texts(self) -> tuple[list[Text], bool]:
        """Every string in the prompt and input, with where it is, and whether it was cut.

        At most :data:`MAX_SCAN_CHARS` characters are collected; the flag tells scanners
        the rest was not looked at, so they can fail closed.
        """
        if self._texts is None:
            collected: list[Text] = []
            budget = MAX_SCAN_CHARS
            truncated = False
            for root, value in self._sources():
                for path, text, is_key in iter_strings(root, value):
                    if len(text) > budget:
                        collected.append((path, text[:budget], is_key))
                        truncated = True
                        break
                    budget -= len(text)
                    collected.append((path, text, is_key))
                if truncated:
                    break
            self._texts = (collected, truncated)
        return self._texts

    def input_size(self) -> int:
        """Size in bytes of the input as JSON (what ``input_size_gt`` compares).

        Input that cannot be written as JSON (cyclic, absurdly deep) counts as larger
        than any limit: a size rule then fires rather than being skipped.
        """
        if self._size is None:
            try:
                encoded = json.dumps(self.context, default=str, ensure_ascii=False).encode()
            except (RecursionError, ValueError):
                self._size = sys.maxsize
            else:
                self._size = len(encoded) + len((self.prompt or "").encode())
        return self._size

    def _sources(self) -> tuple[tuple[str, Any], ...]:
        return (("prompt", self.prompt), ("context", self.context))


Path = tuple[str | int, ...]
Text = tuple[Path, str, bool]


def iter_strings(root: str, value: Any) -> Iterator[Text]:
    """(path, text, is_key) for every string in a JSON-like value, keys included.

    Iterative, so no depth of nesting can exhaust the stack, and each container is
    visited once, so shared or cyclic structures (possible from Python callers) end.
    """
    stack: list[tuple[Path, Any]] = [((root,), value)]
    visited: set[int] = set()
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item, False
            continue
        if not isinstance(item, dict | list | tuple) or id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, dict):
            children: list[tuple[Path, Any]] = []
            for key, child in item.items():
                key_text = str(key)
                yield (*path, key_text), key_text, True
                children.append(((*path, key_text), child))
            stack.extend(reversed(children))
        else:
            stack.extend(((*path, index), item[index]) for index in range(len(item) - 1, -1, -1))


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
            str(sorted(unknown, key=str)[0]), "unknown field (a misspelt field would be ignored)"
        )
    topic = job.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidJobError("topic", "is required and must be non-empty text")
    if "tenant" in job and "tenant_id" in job:
        raise InvalidJobError("tenant", "give `tenant_id` or its other spelling `tenant`, not both")
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
    labels: dict[str, str] = {}
    for key, raw in value.items():
        text = label_text(raw)
        if text is None:
            raise InvalidJobError(f"labels.{key}", "label values must be text")
        folded = str(key).strip().lower()
        if folded in labels:
            raise InvalidJobError(
                f"labels.{key}", "another label has the same key (keys compare case-insensitively)"
            )
        labels[folded] = text.strip().lower()
    return labels


def _prompt(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidJobError("prompt", "must be text")
