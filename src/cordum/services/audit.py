"""The audit chain: signed checkpoints and verification (sealing is in models.audit).

``event_hash = sha256(prev_hash || canonical JSON of the event)``, or HMAC-SHA256 with a
key when one is configured, so that someone who can write to the store cannot re-seal
an event they changed. The canonical form follows RFC 8785: keys sorted by UTF-16 code
units, no whitespace, UTF-8, minimal string escapes. Events hold no floats (times are
integer milliseconds), so the number rules of RFC 8785 reduce to plain integers and the
standard library encoder produces the exact RFC 8785 bytes at a fifth of the cost of a
general implementation (a property test holds the two together).

A chain alone cannot show that its newest events were cut off. Checkpoints can: each
is an Ed25519 signature over ``(tenant, seq, event_hash, time)``; a chain that ends
before a checkpoint, or disagrees with it, was truncated or changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cordum.models.audit import (
    GENESIS_HASH,
    SEALED_FIELDS,
    AuditCheckpoint,
    AuditEvent,
    AuditRow,
    ChainHasher,
    TamperKind,
    VerifyReport,
    body_frame,
    canonical,
)


class CheckpointSigner:
    """Signs checkpoints with an Ed25519 private key (32-byte seed)."""

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public_key)

    def sign(self, tenant_id: str, seq: int, event_hash: str, at_ms: int) -> AuditCheckpoint:
        """A checkpoint stating that ``tenant_id``'s chain reached ``seq`` at ``event_hash``."""
        message = _checkpoint_message(tenant_id, seq, event_hash, at_ms, self.key_id)
        return AuditCheckpoint(
            tenant_id=tenant_id,
            seq=seq,
            event_hash=event_hash,
            at_ms=at_ms,
            key_id=self.key_id,
            signature=self._key.sign(message).hex(),
        )


def key_id_of(public_key: bytes) -> str:
    """A short, stable name for a public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _checkpoint_message(tenant_id: str, seq: int, event_hash: str, at_ms: int, key: str) -> bytes:
    fields = {
        "tenant_id": tenant_id,
        "seq": seq,
        "event_hash": event_hash,
        "at_ms": at_ms,
        "key_id": key,
    }
    return canonical(fields).encode()


def checkpoint_is_genuine(checkpoint: AuditCheckpoint, public_keys: Mapping[str, bytes]) -> bool:
    """Whether ``checkpoint`` carries a valid signature by one of ``public_keys`` (by key id)."""
    public = public_keys.get(checkpoint.key_id)
    if public is None:
        return False
    message = _checkpoint_message(
        checkpoint.tenant_id,
        checkpoint.seq,
        checkpoint.event_hash,
        checkpoint.at_ms,
        checkpoint.key_id,
    )
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            bytes.fromhex(checkpoint.signature), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_chain(
    tenant_id: str,
    events: Iterable[AuditEvent | AuditRow],
    hasher: ChainHasher,
    *,
    checkpoints: Iterable[AuditCheckpoint] = (),
    public_keys: Mapping[str, bytes] | None = None,
) -> VerifyReport:
    """Check a tenant's events, as the store lists them by ``seq``, and its checkpoints.

    Reports the first break: ``modified`` (an event's content or hash was changed, or a
    checkpoint disagrees with the chain), ``missing`` (a sequence number is absent),
    ``reordered`` (an intact event sits at another event's position), ``truncated``
    (the chain ends before a genuine checkpoint says it had reached).
    """
    events = list(events)
    hash_at = _intact_prefix(tenant_id, events, hasher)
    if len(hash_at) == len(events):
        return _check_checkpoints(tenant_id, len(events), hash_at, checkpoints, public_keys)
    # Something is off: the careful pass says what, and where, from the first doubtful event.
    known_hashes = {event.event_hash for event in events}
    listed = {event.seq for event in events}
    expected = len(hash_at) + 1
    prev = hash_at[expected - 1] if hash_at else GENESIS_HASH
    for event in events[expected - 1 :]:
        broken = _check_event(event, hasher, expected, prev, known_hashes, listed)
        if broken is None and event.tenant_id != tenant_id:
            detail = f"event {event.seq} belongs to chain {event.tenant_id!r}, not {tenant_id!r}"
            broken = TamperKind.MODIFIED, event.seq, detail
        if broken is not None:
            kind, seq, detail = broken
            return _report(tenant_id, False, expected - 1, kind, seq, detail)
        hash_at[event.seq] = event.event_hash
        expected, prev = expected + 1, event.event_hash
    return _check_checkpoints(tenant_id, expected - 1, hash_at, checkpoints, public_keys)


def _intact_prefix(
    tenant_id: str, events: list[AuditEvent | AuditRow], hasher: ChainHasher
) -> dict[int, str]:
    """The hashes of the leading events that are exactly right: the fast, common case."""
    hash_at: dict[int, str] = {}
    expected, prev = 1, GENESIS_HASH
    for event in events:
        if (
            event.seq != expected
            or event.prev_hash != prev
            or event.tenant_id != tenant_id
            or not _sealed_as_stored(event)
        ):
            break
        if hasher.digest(prev, event.body) != event.event_hash:
            break
        hash_at[expected] = prev = event.event_hash
        expected += 1
    return hash_at


def _sealed_as_stored(event: AuditEvent | AuditRow) -> bool:
    """Whether the stored fields are exactly the ones in the hashed body, without parsing it.

    The body is canonical JSON with sorted keys, so the fields around ``data`` have one
    possible spelling: build it from the stored fields and compare strings. For an
    :class:`AuditEvent` (which carries ``data`` separately, as exports do) the data is
    compared the same way.
    """
    body = event.body
    try:
        prefix, suffix = body_frame(
            tenant_id=event.tenant_id,
            seq=event.seq,
            kind=event.kind,
            at_ms=event.at_ms,
            actor=event.actor,
            subject=event.subject,
            prev_hash=event.prev_hash,
        )
    except TypeError:
        return False
    if not (body.startswith(prefix) and body.endswith(suffix)):
        return False
    if isinstance(event, AuditRow):
        return True
    try:
        return body[len(prefix) : len(body) - len(suffix)] == canonical(event.data)
    except TypeError:
        return False


def _check_checkpoints(
    tenant_id: str,
    last: int,
    hash_at: Mapping[int, str],
    checkpoints: Iterable[AuditCheckpoint],
    public_keys: Mapping[str, bytes] | None,
) -> VerifyReport:
    """The report for a chain intact up to ``last``, once its checkpoints are checked."""
    genuine = 0
    for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
        if checkpoint.tenant_id != tenant_id:
            continue
        if not checkpoint_is_genuine(checkpoint, public_keys or {}):
            detail = f"checkpoint at seq {checkpoint.seq} has no valid signature by a known key"
            return _report(
                tenant_id, False, last, TamperKind.MODIFIED, checkpoint.seq, detail, genuine
            )
        genuine += 1
        if checkpoint.seq > last:
            detail = (
                f"a signed checkpoint says the chain reached seq {checkpoint.seq};"
                f" it ends at {last}"
            )
            return _report(tenant_id, False, last, TamperKind.TRUNCATED, last + 1, detail, genuine)
        if hash_at.get(checkpoint.seq) != checkpoint.event_hash:
            detail = f"event {checkpoint.seq} differs from the signed checkpoint"
            return _report(
                tenant_id, False, last, TamperKind.MODIFIED, checkpoint.seq, detail, genuine
            )
    return _report(tenant_id, True, last, None, None, f"{last} events intact", genuine)


def _check_event(
    event: AuditEvent | AuditRow,
    hasher: ChainHasher,
    expected: int,
    prev: str,
    known: set[str],
    listed: set[int],
) -> tuple[TamperKind, int, str] | None:
    """Why ``event`` cannot be the chain's event number ``expected`` after ``prev``."""
    try:
        sealed = json.loads(event.body)
    except ValueError:
        return TamperKind.MODIFIED, event.seq, f"event {event.seq}: its body is not JSON"
    if (
        not isinstance(sealed, dict)
        or hasher.digest(event.prev_hash, event.body) != event.event_hash
    ):
        return TamperKind.MODIFIED, event.seq, f"event {event.seq}: hash does not match content"
    if sealed.get("seq") != event.seq:
        detail = f"event sealed as seq {sealed.get('seq')} is stored at seq {event.seq}"
        return TamperKind.REORDERED, min(expected, event.seq), detail
    if any(sealed.get(name) != getattr(event, name, sealed.get(name)) for name in SEALED_FIELDS):
        return TamperKind.MODIFIED, event.seq, f"event {event.seq}: fields differ from its body"
    if event.seq > expected and expected in listed:
        return TamperKind.REORDERED, expected, f"event {expected} comes after {event.seq}"
    if event.seq > expected:
        return TamperKind.MISSING, expected, f"events {expected}..{event.seq - 1} are missing"
    if event.seq < expected:
        return TamperKind.REORDERED, event.seq, f"event {event.seq} appears twice or late"
    if event.prev_hash != prev:
        if event.prev_hash in known:
            detail = f"event {event.seq} follows another event than {expected - 1}"
            return TamperKind.REORDERED, event.seq, detail
        detail = f"event {expected - 1} was changed and re-sealed: {event.seq} no longer follows it"
        return TamperKind.MODIFIED, expected - 1, detail
    return None


def _report(
    tenant_id: str,
    ok: bool,
    last_seq: int,
    kind: TamperKind | None,
    first_bad_seq: int | None,
    detail: str,
    checkpoints: int = 0,
) -> VerifyReport:
    """Events up to ``last_seq`` were found intact (so that many were checked)."""
    return VerifyReport(
        tenant_id=tenant_id,
        ok=ok,
        checked=last_seq,
        last_seq=last_seq,
        checkpoints=checkpoints,
        first_bad_seq=first_bad_seq,
        kind=kind,
        detail=detail,
    )
