"""Building a job from a JSON/YAML file and command-line flags.

The file holds the fields of ``POST /api/v1/jobs``; flags override its scalar fields and
add to its lists and labels, so a saved job can be varied from the shell.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cordum.models import Job
from cordum.policy.errors import PolicyIssue, PolicyLoadError
from cordum.policy.source import decode_policy_bytes, parse_yaml, read_policy_bytes
from cordum.policy.validate import translate_errors

STDIN = "-"


@dataclass
class JobFlags:
    """Job fields given as options."""

    topic: str | None = None
    tenant: str | None = None
    capability: str | None = None
    actor_id: str | None = None
    actor_type: str | None = None
    pack_id: str | None = None
    risk_tags: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    context: str | None = None


def build_job(job_file: str | None, flags: JobFlags) -> Job:
    """The job described by ``job_file`` (if any) with ``flags`` applied.

    Raises :class:`PolicyLoadError` whose issues say what is wrong and where.
    """
    name = "<stdin>" if job_file == STDIN else (job_file or "<flags>")
    data: dict[str, Any] = _read_job_file(job_file) if job_file else {}
    if flags.tenant is not None:
        data.pop("tenant", None)  # the file may use the other spelling of tenant_id
    for key, value in (
        ("topic", flags.topic),
        ("tenant_id", flags.tenant),
        ("capability", flags.capability),
        ("actor_id", flags.actor_id),
        ("actor_type", flags.actor_type),
        ("pack_id", flags.pack_id),
    ):
        if value is not None:
            data[key] = value
    if flags.risk_tags:
        data["risk_tags"] = [*data.get("risk_tags", []), *flags.risk_tags]
    if flags.requires:
        data["requires"] = [*data.get("requires", []), *flags.requires]
    if flags.labels:
        data["labels"] = {**data.get("labels", {}), **_parse_labels(flags.labels)}
    if flags.context is not None:
        data["context"] = _parse_context(flags.context)
    if "topic" not in data:
        raise _usage(name, "missing_topic", "a job needs a topic", "give a JOB file or --topic")
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise PolicyLoadError(translate_errors(exc, None, Job, name)) from None


def _read_job_file(job_file: str) -> dict[str, Any]:
    if job_file == STDIN:
        text = sys.stdin.read()
        name = "<stdin>"
    else:
        path = Path(job_file)
        text = decode_policy_bytes(read_policy_bytes(path), job_file)
        name = job_file
    parsed = parse_yaml(text, name)
    if not isinstance(parsed.data, dict):
        raise _usage(name, "not_a_mapping", "a job file is a mapping of job fields", None)
    try:
        Job.model_validate(parsed.data)
    except ValidationError as exc:
        # Report problems against the file's own lines before flags are applied.
        problems = [i for i in translate_errors(exc, parsed, Job) if i.code != "missing_field"]
        if problems:
            raise PolicyLoadError(problems) from None
    return dict(parsed.data)


def _parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _usage("--label", "bad_label", f"`{pair}` is not key=value", "--label env=prod")
        labels[key.strip()] = value.strip()
    return labels


def _parse_context(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _usage(
            "--context", "bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}", None
        ) from None


def _usage(name: str, code: str, message: str, hint: str | None) -> PolicyLoadError:
    return PolicyLoadError([PolicyIssue(code=code, message=message, file=name, hint=hint)])
