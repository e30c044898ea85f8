"""The verifiable audit trail: events in per-tenant hash chains, signed checkpoints.

Each event is sealed by hashing the previous event's hash followed by the canonical JSON
of the event itself (``body``, kept verbatim so verifying needs no re-encoding). Times
are integer milliseconds: canonical JSON has no exact form for every float.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from json.encoder import encode_basestring as encode_json_string
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a tenant's first event."""

SYSTEM_CHAIN = "_system"
"""The chain of events that belong to no tenant: policy publishes, keys, anonymous auth
failures. Only keys that span every tenant may read it."""


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


class AuditRow(NamedTuple):
    """An event as stored, without ``data`` parsed out of its body: what verifying reads."""

    tenant_id: str
    seq: int
    kind: str
    at_ms: int
    actor: str | None
    subject: str | None
    prev_hash: str
    event_hash: str
    body: str


@dataclass(frozen=True)
class AuditDraft:
    """An event to append to a tenant's chain; the store gives it its place and seal."""

    tenant_id: str
    kind: str
    subject: str | None = None
    actor: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    at_ms: int | None = None
    """None: the time of the write."""


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


MAX_SAFE_INTEGER = 2**53 - 1
"""RFC 8785 numbers are IEEE doubles: integers beyond this have no exact form."""

SEALED_FIELDS = ("tenant_id", "seq", "kind", "at_ms", "actor", "subject", "data", "prev_hash")
"""The event fields inside the hashed body, in the order of the model."""


def canonical(value: Mapping[str, Any]) -> str:
    """RFC 8785 canonical JSON of ``value`` (floats are refused: use integers)."""
    if _plain(value):
        # ASCII keys sort the same by code point as by UTF-16 unit, so the encoder's own
        # key sort is exact here, at a quarter of the cost of reordering in Python.
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(_ordered(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_SCALARS = (str, bool, type(None))


def body_frame(
    *,
    tenant_id: str,
    seq: int,
    kind: str,
    at_ms: int,
    actor: str | None,
    subject: str | None,
    prev_hash: str,
) -> tuple[str, str]:
    """The canonical body of an event before and after its ``data``.

    The sealed fields sort around ``data`` (actor, at_ms | kind, prev_hash, seq, subject,
    tenant_id), so the canonical body is this prefix, ``canonical(data)``, this suffix.
    Sealing builds bodies this way and verifying checks stored fields this way, both
    without encoding or parsing a whole event.
    """
    for name, number in (("seq", seq), ("at_ms", at_ms)):
        if type(number) is not int or not -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            raise TypeError(f"an audit event's {name} is an integer, not {number!r}")
    prefix = f'{{"actor":{_text(actor)},"at_ms":{at_ms},"data":'
    suffix = (
        f',"kind":{_text(kind)},"prev_hash":{_text(prev_hash)},"seq":{seq}'
        f',"subject":{_text(subject)},"tenant_id":{_text(tenant_id)}}}'
    )
    return prefix, suffix


def _text(value: str | None) -> str:
    if value is None:
        return "null"
    if type(value) is not str:
        raise TypeError(f"audit event fields hold text, not {type(value).__name__}")
    return encode_json_string(value)


def _plain(value: Mapping[str, Any]) -> bool:
    """Whether ``value`` holds only ASCII keys, strings, booleans, null, safe ints, dicts."""
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
            continue
        if kind is dict and _plain(item):
            continue
        return False
    return True


def _ordered(value: Any) -> Any:
    if isinstance(value, Mapping):
        keys = sorted(value, key=_utf16)
        return {key: _ordered(value[key]) for key in keys}
    if isinstance(value, list | tuple):
        return [_ordered(item) for item in value]
    if isinstance(value, float):
        raise TypeError(f"audit events hold integers, not floats ({value!r})")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        raise TypeError(f"{value} is beyond the integers RFC 8785 represents exactly")
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"audit events hold JSON values, not {type(value).__name__}")


def _utf16(key: object) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"audit event keys are strings, not {type(key).__name__}")
    return key.encode("utf-16-be", "surrogatepass")


class ChainHasher:
    """Computes event hashes: plain SHA-256, or HMAC-SHA256 with a secret key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    @property
    def fingerprint(self) -> str:
        """Names the key without revealing it, so a store can tell it is sealed by another."""
        if self._key is None:
            return ""
        return hashlib.sha256(b"cordum-audit-key:" + self._key).hexdigest()[:16]

    @property
    def algorithm(self) -> str:
        """``sha256`` or ``hmac-sha256``: what a verifier needs to know (never the key)."""
        return "sha256" if self._key is None else "hmac-sha256"

    def digest(self, prev_hash: str, body: str) -> str:
        """The hash sealing ``body`` after ``prev_hash``."""
        message = bytes.fromhex(prev_hash) + body.encode()
        if self._key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def seal_fields(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """The canonical body of ``fields`` (the :data:`SEALED_FIELDS`) and its hash."""
        prefix, suffix = body_frame(
            tenant_id=fields["tenant_id"],
            seq=fields["seq"],
            kind=fields["kind"],
            at_ms=fields["at_ms"],
            actor=fields["actor"],
            subject=fields["subject"],
            prev_hash=fields["prev_hash"],
        )
        body = prefix + canonical(fields["data"]) + suffix
        return body, self.digest(fields["prev_hash"], body)

    def seal(
        self,
        *,
        tenant_id: str,
        seq: int,
        prev_hash: str,
        kind: str,
        at_ms: int,
        data: Mapping[str, Any],
        actor: str | None = None,
        subject: str | None = None,
    ) -> AuditEvent:
        """The next event of a chain whose head is ``(seq - 1, prev_hash)``."""
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "seq": seq,
            "kind": kind,
            "at_ms": at_ms,
            "actor": actor,
            "subject": subject,
            "data": dict(data),
            "prev_hash": prev_hash,
        }
        body, event_hash = self.seal_fields(fields)
        return AuditEvent(**fields, event_hash=event_hash, body=body)
