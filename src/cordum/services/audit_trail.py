"""The audit trail as a service: verifying chains from the store, signing checkpoints
on a timer, and exporting a chain as NDJSON that can be verified offline.

An export is self-describing: a ``chain`` line (tenant, hash algorithm, the public keys
of the checkpoint signer), one ``event`` line per event in sequence order, then the
``checkpoint`` lines. :func:`verify_export` checks such a file with no server at all;
pin the signer's public key (``trusted_keys``) so a forger cannot bring their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cordum.models.audit import (
    AuditCheckpoint,
    AuditEvent,
    AuditRow,
    ChainHasher,
    TamperKind,
    VerifyReport,
)
from cordum.ports import AuditFilter, Store
from cordum.services.audit import CheckpointSigner, checkpoint_is_genuine, verify_chain
from cordum.services.lease import Lease, SoleProcess

log = logging.getLogger(__name__)

READ_BATCH = 20_000
Sealed = TypeVar("Sealed", AuditEvent, AuditRow)
EXPORT_FORMAT = "cordum-audit/1"


class SigningKeyError(ValueError):
    """The checkpoint signing key file cannot be used; the message names it."""


class ExportFormatError(ValueError):
    """An export file that is not one: says which line and what is wrong with it."""


def load_signing_key(path: Path) -> CheckpointSigner:
    """The checkpoint signer whose seed (hex) is in ``path``; a new one is created there.

    The file is created with mode 0600: whoever reads it can forge checkpoints.
    """
    if path.exists():
        text = path.read_text().strip()
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise SigningKeyError(
                f"{path}: expected a 32-byte Ed25519 seed as 64 hex characters;"
                " delete the file to have a new key made"
            )
        return CheckpointSigner(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(seed.hex() + "\n")
    return CheckpointSigner(seed)


@dataclass(frozen=True)
class Chain:
    """A chain as read from an export: its events and checkpoints, and what sealed it."""

    tenant_id: str
    algorithm: str
    public_keys: dict[str, bytes]
    events: list[AuditEvent]
    checkpoints: list[AuditCheckpoint]


class AuditTrail:
    """Verifies, checkpoints and exports the chains held by a store."""

    def __init__(
        self,
        store: Store,
        hasher: ChainHasher,
        signer: CheckpointSigner | None,
        *,
        checkpoint_interval_s: float = 60.0,
        lease: Lease | None = None,
    ) -> None:
        """``lease``: with several replicas, only its holder signs timed checkpoints."""
        self.store = store
        self.hasher = hasher
        self.signer = signer
        self.checkpoint_interval_s = checkpoint_interval_s
        self.lease: Lease = lease if lease is not None else SoleProcess("audit-checkpoints")
        self._task: asyncio.Task[None] | None = None

    @property
    def public_keys(self) -> dict[str, bytes]:
        """The keys checkpoints are checked against (the signer's own)."""
        if self.signer is None:
            return {}
        return {self.signer.key_id: self.signer.public_key}

    def events(self, tenant_id: str) -> AsyncIterator[AuditEvent]:
        """Every event of a chain, in sequence order, read in batches."""
        return _in_batches(
            lambda after: self.store.list_audit(
                AuditFilter(tenant_id=tenant_id, after_seq=after), limit=READ_BATCH
            )
        )

    async def verify(self, tenant_id: str) -> VerifyReport:
        """Verify one chain, with its checkpoints."""
        rows = [
            row
            async for row in _in_batches(
                lambda after: self.store.audit_rows(tenant_id, after_seq=after, limit=READ_BATCH)
            )
        ]
        checkpoints = await self.store.list_audit_checkpoints(tenant_id)
        # Hashing a long chain takes CPU for a while: off the event loop, so dispatch and
        # approvals keep moving while someone verifies.
        return await asyncio.to_thread(
            verify_chain,
            tenant_id,
            rows,
            self.hasher,
            checkpoints=checkpoints,
            public_keys=self.public_keys,
        )

    async def checkpoint(self, chains: Iterable[str] | None = None) -> list[AuditCheckpoint]:
        """Sign the head of every chain (or of ``chains``) that moved since its last one."""
        if self.signer is None:
            return []
        signed = []
        for tenant_id in await self.store.audit_chains() if chains is None else chains:
            seq, event_hash = await self.store.audit_head(tenant_id)
            known = await self.store.list_audit_checkpoints(tenant_id)
            if seq == 0 or (known and known[-1].seq >= seq):
                continue
            checkpoint = self.signer.sign(tenant_id, seq, event_hash, int(time.time() * 1000))
            await self.store.add_audit_checkpoint(checkpoint)
            signed.append(checkpoint)
        return signed

    def start(self) -> None:
        """Sign checkpoints every ``checkpoint_interval_s``."""
        if self._task is None and self.signer is not None and self.checkpoint_interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="cordum-audit-checkpoints")

    async def stop(self) -> None:
        """Stop the timer and sign a last checkpoint, so a clean stop is never 'truncated'."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.checkpoint()
        except Exception:
            log.exception("could not sign the final audit checkpoint")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                if await self.lease.held():
                    await self.checkpoint()
            except Exception:
                log.exception("signing audit checkpoints failed; trying again")

    async def export(self, tenant_id: str) -> AsyncIterator[str]:
        """The chain as NDJSON lines (each ending in a newline).

        The head is signed first and the export stops at that checkpoint, so every export
        ends with a signed checkpoint covering its last event: cutting lines off the end
        of the file is detectable too. Events appended meanwhile belong to the next one.
        """
        await self.checkpoint([tenant_id])
        checkpoints = await self.store.list_audit_checkpoints(tenant_id)
        upto = checkpoints[-1].seq if checkpoints else 0
        header = {
            "type": "chain",
            "format": EXPORT_FORMAT,
            "tenant_id": tenant_id,
            "algorithm": self.hasher.algorithm,
            "public_keys": {key_id: key.hex() for key_id, key in self.public_keys.items()},
        }
        yield json.dumps(header) + "\n"
        async for event in self.events(tenant_id):
            if event.seq > upto:
                break
            yield json.dumps({"type": "event", **event.model_dump(mode="json")}) + "\n"
        for checkpoint in checkpoints:
            yield json.dumps({"type": "checkpoint", **checkpoint.model_dump(mode="json")}) + "\n"


async def _in_batches(
    fetch: Callable[[int], Awaitable[Sequence[Sealed]]],
) -> AsyncIterator[Sealed]:
    """Everything ``fetch(after_seq)`` pages through, in order, :data:`READ_BATCH` at a time."""
    after = 0
    while True:
        batch = await fetch(after)
        for item in batch:
            yield item
        if len(batch) < READ_BATCH:
            return
        after = batch[-1].seq


def read_export(lines: Iterable[str], *, source: str = "<export>") -> Chain:
    """Parse an export; :class:`ExportFormatError` names the first bad line."""
    header: dict[str, Any] | None = None
    events: list[AuditEvent] = []
    checkpoints: list[AuditCheckpoint] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ExportFormatError(f"{where}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise ExportFormatError(f"{where}: expected a JSON object")
        kind = item.pop("type", None)
        try:
            if kind == "chain" and header is None:
                header = item
            elif kind == "event" and header is not None:
                events.append(AuditEvent.model_validate(item))
            elif kind == "checkpoint" and header is not None:
                checkpoints.append(AuditCheckpoint.model_validate(item))
            else:
                raise ExportFormatError(
                    f"{where}: unexpected line of type {kind!r}"
                    + ("" if header is not None else " (the first line must be the chain line)")
                )
        except ValueError as exc:
            if isinstance(exc, ExportFormatError):
                raise
            raise ExportFormatError(f"{where}: {exc}") from None
    if header is None:
        raise ExportFormatError(f"{source}: empty; expected a `cordum audit` export")
    if header.get("format") != EXPORT_FORMAT:
        raise ExportFormatError(
            f"{source}:1: format {header.get('format')!r} is not {EXPORT_FORMAT!r}"
        )
    keys = header.get("public_keys") or {}
    try:
        public_keys = {str(k): bytes.fromhex(str(v)) for k, v in dict(keys).items()}
    except (TypeError, ValueError):
        raise ExportFormatError(f"{source}:1: public_keys must map key ids to hex") from None
    return Chain(
        tenant_id=str(header.get("tenant_id")),
        algorithm=str(header.get("algorithm")),
        public_keys=public_keys,
        events=events,
        checkpoints=checkpoints,
    )


def verify_export(
    chain: Chain, *, hmac_key: bytes | None = None, trusted_keys: Mapping[str, bytes] | None = None
) -> VerifyReport:
    """Verify an exported chain offline.

    The header is not trusted: with ``hmac_key`` the events are checked with it whatever
    the header claims (a chain re-sealed with plain SHA-256 fails), and without it a
    header claiming HMAC is refused. Checkpoints are checked against ``trusted_keys``
    when given, else against the keys the export names (which catches accidents, not a
    forger; pin the key for that). A non-empty export must end with a genuine checkpoint
    at its last event, as exports are written; otherwise it is ``truncated``.
    """
    if chain.algorithm == "hmac-sha256" and hmac_key is None:
        raise ValueError("this chain is sealed with HMAC-SHA256: give the HMAC key to verify it")
    keys = dict(chain.public_keys if trusted_keys is None else trusted_keys)
    report = verify_chain(
        chain.tenant_id,
        chain.events,
        ChainHasher(hmac_key),
        checkpoints=chain.checkpoints,
        public_keys=keys,
    )
    if not report.ok or report.last_seq == 0:
        return report
    if any(c.seq == report.last_seq for c in chain.checkpoints if checkpoint_is_genuine(c, keys)):
        return report
    return report.model_copy(
        update={
            "ok": False,
            "kind": TamperKind.TRUNCATED,
            "first_bad_seq": report.last_seq + 1,
            "detail": f"no signed checkpoint covers the last event ({report.last_seq}):"
            " the end of the export was cut off, or it was not written by `cordum audit`",
        }
    )


def hmac_key_bytes(text: str | None) -> bytes | None:
    """``CORDUM_AUDIT_HMAC_KEY`` as bytes: hex when it reads as hex, else its UTF-8."""
    if not text:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode()
