"""The policy's history as the store keeps it: editable bundles and published snapshots.

Bundles are drafts: editing one changes nothing until a publish validates every bundle
together and makes the result the active snapshot. Snapshots are immutable and numbered;
a rollback makes an older one active again, and the history keeps both moves.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PolicyBundleRecord(BaseModel):
    """One editable policy fragment (YAML text), merged with the others in id order."""

    model_config = ConfigDict(frozen=True)

    bundle_id: str
    text: str
    updated_at: float
    updated_by: str | None = None


class PolicySnapshotRecord(BaseModel):
    """A published policy: the bundles it was built from and who published it, when, why."""

    model_config = ConfigDict(frozen=True)

    version: int = Field(0, description="Publish number, from 1; 0 until the store assigns it.")
    snapshot_id: str = Field(description='The policy snapshot id, "<version>:<sha256>".')
    policy_version: str = Field("", description="The `version` the policy document declares.")
    author: str | None = None
    message: str = ""
    created_at: float
    bundles: dict[str, str] = Field(description="Bundle id -> YAML text, as published.")
