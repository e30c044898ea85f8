"""Snapshot ids: which policy decided, in a form that survives reformatting.

The id is ``"<version>:<sha256>"`` over a canonical JSON form of the validated document.
Validation already trims and lower-cases case-insensitive values, sorts set-like lists
and maps every spelling of a decision onto one value, so reordering keys, reformatting,
or writing ``DENY`` for ``deny`` keeps the id, while any change in meaning (a rule, its
order, a reason an agent would read) changes it.
"""

from __future__ import annotations

import hashlib
import json

from cordum.policy.schema import PolicyDocument


def canonical_json(document: PolicyDocument) -> str:
    """The canonical JSON text of a document (sorted keys, no insignificant whitespace)."""
    data = document.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def snapshot_id(document: PolicyDocument) -> str:
    """``"<version>:<sha256 of the canonical form>"``."""
    digest = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    return f"{document.snapshot_version}:{digest}"
