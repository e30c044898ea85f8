"""The verifiable audit trail: events in per-tenant hash chains, signed checkpoints.

Each event is sealed by hashing the previous event's hash followed by the canonical JSON
of the event itself (``body``, kept verbatim so verifying needs no re-encoding). Times
are integer milliseconds: canonical JSON has no exact form for every float.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a tenant's first event."""


class AuditEvent(BaseModel):
    """One sealed event of a tenant's chain."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    seq: int = Field(ge=1, description="Position in the tenant's chain, from 1, no gaps.")
    kind: str = Field(description="What happened: job.transition, decision, policy.publish, ...")
    at_ms: int = Field(description="When, in milliseconds since the Unix epoch.")
    actor: str | None = None
    subject: str | None = Field(None, description="What it happened to: a job id, a snapshot.")
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    event_hash: str
    body: str = Field(
        description="The canonical JSON that was hashed (everything above but the hash)."
    )


class AuditCheckpoint(BaseModel):
    """A signed statement that a tenant's chain had reached ``seq`` with ``event_hash``."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    seq: int
    event_hash: str
    at_ms: int
    key_id: str = Field(description="Which signing key; verifiers pick the public key by it.")
    signature: str = Field(description="Ed25519 signature of the canonical checkpoint, hex.")


class TamperKind(StrEnum):
    """How a chain was found broken."""

    MODIFIED = "modified"
    MISSING = "missing"
    REORDERED = "reordered"
    TRUNCATED = "truncated"


class VerifyReport(BaseModel):
    """The outcome of verifying one tenant's chain."""

    tenant_id: str
    ok: bool
    checked: int = Field(description="Events examined.")
    last_seq: int = Field(description="Highest sequence number found intact.")
    checkpoints: int = Field(0, description="Signed checkpoints that were checked.")
    first_bad_seq: int | None = None
    kind: TamperKind | None = None
    detail: str = ""
