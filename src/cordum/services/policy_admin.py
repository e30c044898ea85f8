"""The policy's lifecycle: editable bundles, published snapshots, rollback, start-up sync.

Bundles are drafts. Every edit is validated by the loader that reads policy files, alone
and together with the other bundles, so the drafts always form a set that loads and a
publish cannot fail on something an edit let through. Publishing compiles the drafts
into a new numbered snapshot; a rollback makes an earlier snapshot active again and
resets the drafts to its bundles, so the next publish does not quietly bring back what
was rolled back.

Two invariants shape the order of every activation:

- **The store is the source of truth.** The snapshot, the drafts a rollback or a start-up
  publish resets, and the audit events of both are written first, in one transaction;
  the kernel's policy is swapped after. A failed write leaves all of it on the old
  policy; a crash between the two leaves the store ahead, and the next start loads the
  store's active snapshot (whose bundles the drafts then already hold).
- **Each decision names the snapshot that made it.** The swap replaces one reference in
  :class:`~cordum.services.kernel.PolicyHolder`; a decision is taken by whichever policy
  object it read, and that object stamps its own snapshot id on the record. Nothing is
  drained or paused, so no request in flight is dropped.

Writes are serialised by one lock: two concurrent publishes cannot leave the kernel on
one snapshot and the store on another, and two concurrent edits cannot each pass
validation against a set the other is changing. Compiling runs in a worker thread: a
large policy never stalls the requests being decided meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from cordum.models.audit import SYSTEM_CHAIN, AuditDraft, AuditEvent
from cordum.models.policy_records import PolicyBundleRecord, PolicySnapshotRecord
from cordum.policy import Policy, PolicyIssue, PolicyLoadError, load_bundles
from cordum.policy.loader import BASE_BUNDLE, bundle_files
from cordum.policy.snapshot import canonical_json
from cordum.policy.source import DEFAULT_MAX_BYTES, decode_policy_bytes, read_policy_bytes
from cordum.ports import Store
from cordum.ports.store import SNAPSHOT_VERSION, AuditFilter
from cordum.services.kernel import PolicyHolder

log = logging.getLogger(__name__)

MAX_BUNDLE_ID = 200
MAX_VERSION_DIGITS = 18
_UNUSABLE_IN_ID = re.compile(r"[\x00-\x1f\x7f\\]")

STARTUP_AUTHOR = "cordum up"
POLICY_EVENTS = "policy."


class UnknownBundleError(LookupError):
    """No bundle has this id."""

    def __init__(self, bundle_id: str) -> None:
        super().__init__(f"no policy bundle with id {bundle_id!r}")
        self.bundle_id = bundle_id


class UnknownSnapshotError(LookupError):
    """No snapshot has this version or id."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"no policy snapshot {ref!r}; give a version number or a full snapshot id"
            " (see GET /api/v1/policy/snapshots)"
        )
        self.ref = ref


class InvalidBundleIdError(ValueError):
    """A bundle id that cannot name a file (``<pack>/<name>``, as a directory would)."""


class LastBundleError(ValueError):
    """Deleting the only bundle would leave nothing to publish."""


class StartupPolicyError(RuntimeError):
    """The store's active snapshot no longer loads, and no policy was given to replace it.

    ``summary`` is the one line that says what to do; the message adds the load errors,
    which are also in ``issues``.
    """

    def __init__(self, summary: str, issues: Sequence[PolicyIssue] = ()) -> None:
        self.summary = summary
        self.issues = list(issues)
        detail = str(PolicyLoadError(self.issues)) if self.issues else ""
        super().__init__(f"{summary}\n{detail}" if detail else summary)


@dataclass(frozen=True)
class PolicySource:
    """The policy a control plane is started with, as the bundle texts it was read from."""

    bundles: Mapping[str, str]
    origin: str
    """Where it came from, for the snapshot's message: a path, ``demo pack``, ``deny-all``."""
    explicit: bool = False
    """Named by the operator (``--policy``): published at start-up when it differs."""


@dataclass(frozen=True)
class BundleEdit:
    """The outcome of a bundle write."""

    bundle: PolicyBundleRecord
    created: bool
    changed: bool
    """False when the bundle already had exactly this text (nothing was written)."""


@dataclass(frozen=True)
class Activation:
    """The outcome of a publish or rollback: the active snapshot and whether it changed."""

    snapshot: PolicySnapshotRecord
    changed: bool


def source_from_path(path: Path) -> PolicySource:
    """A policy directory (one bundle per file, ids as the loader gives them) or file.

    A single file is the ``base`` bundle: bundles merge in id order with ``base`` first,
    so a fragment added later (whatever its name) extends the file instead of becoming
    the base whose ``version`` and ``default_tenant`` win. Raises
    :class:`PolicyLoadError` for files that cannot be read, as loading would.
    """
    files = bundle_files(path) if path.is_dir() else {BASE_BUNDLE: path}
    texts: dict[str, str] = {}
    issues: list[PolicyIssue] = []
    for bundle_id, file in files.items():
        try:
            texts[bundle_id] = decode_policy_bytes(read_policy_bytes(file), str(file))
        except PolicyLoadError as exc:
            issues.extend(exc.issues)
    if issues:
        raise PolicyLoadError(issues)
    return PolicySource(texts, str(path), explicit=True)


def source_from_policy(policy: Policy, origin: str) -> PolicySource:
    """A compiled policy whose text is unknown, as one bundle of its canonical YAML.

    For control planes built around a :class:`Policy` object (embedding, tests): the
    canonical form reloads to the same snapshot id, so what the store records is exactly
    what decides.
    """
    document = json.loads(canonical_json(policy.document))
    return PolicySource({BASE_BUNDLE: yaml.safe_dump(document, sort_keys=False)}, origin)


def text_digest(text: str) -> str:
    """sha256 of a bundle's text, for audit events (the text itself is in the snapshot)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PolicyAdmin:
    """Edits bundles, publishes and rolls back snapshots, keeps the kernel on the active one."""

    def __init__(
        self,
        store: Store,
        holder: PolicyHolder,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.holder = holder
        self.max_bytes = max_bytes
        self.clock = clock
        self.on_change: Callable[[PolicySnapshotRecord], Awaitable[None]] | None = None
        """Called after a publish or rollback changed the active snapshot (the wiring
        tells the other replicas, whose kernels then :meth:`follow` the store)."""
        self._writes = asyncio.Lock()

    # --- bundles ----------------------------------------------------------------------------

    async def list_bundles(self) -> list[PolicyBundleRecord]:
        """Every draft bundle, by id."""
        return await self.store.list_policy_bundles()

    async def get_bundle(self, bundle_id: str) -> PolicyBundleRecord:
        """One bundle; :class:`UnknownBundleError` when there is none."""
        bundle = await self.store.get_policy_bundle(bundle_id)
        if bundle is None:
            raise UnknownBundleError(bundle_id)
        return bundle

    async def put_bundle(self, bundle_id: str, text: str, author: str) -> BundleEdit:
        """Create or replace a bundle once it loads on its own and with the others.

        Raises :class:`InvalidBundleIdError` or :class:`PolicyLoadError` (whose issues
        name the bundle id as the file, with line and column); nothing is written then.
        """
        check_bundle_id(bundle_id)
        async with self._writes:
            current = await self.store.get_policy_bundle(bundle_id)
            if current is not None and current.text == text:
                return BundleEdit(current, created=False, changed=False)
            # Alone first, so a broken bundle's own errors are what the author sees.
            await self._compile({bundle_id: text})
            drafts = await self._drafts()
            await self._compile({**drafts, bundle_id: text})
            record = await self._write_bundle(bundle_id, text, author, drafts)
        return BundleEdit(record, created=current is None, changed=True)

    async def delete_bundle(self, bundle_id: str, author: str) -> None:
        """Remove a bundle if the others still load without it.

        Raises :class:`UnknownBundleError`, :class:`LastBundleError` or
        :class:`PolicyLoadError`.
        """
        async with self._writes:
            drafts = await self._drafts()
            if bundle_id not in drafts:
                raise UnknownBundleError(bundle_id)
            rest = {key: text for key, text in drafts.items() if key != bundle_id}
            if not rest:
                raise LastBundleError(
                    f"bundle {bundle_id!r} is the only one; a policy needs at least one bundle"
                    " (replace it with PUT instead)"
                )
            await self._compile(rest)
            await self._delete_bundle(bundle_id, author, drafts)

    # --- snapshots --------------------------------------------------------------------------

    async def snapshots(self) -> list[PolicySnapshotRecord]:
        """Every published snapshot, newest first."""
        return await self.store.list_policy_snapshots()

    async def active(self) -> PolicySnapshotRecord | None:
        """The snapshot in force (None only before the first start has synced)."""
        return await self.store.active_policy_snapshot()

    async def find_snapshot(self, ref: str | int) -> PolicySnapshotRecord:
        """A snapshot by version (``3``, ``"3"``, ``"v3"``) or by snapshot id.

        Several versions can share a snapshot id (the same policy published twice); the
        id then names the newest of them.
        """
        text = str(ref).strip()
        digits = text[1:] if text[:1] in ("v", "V") else text
        # ASCII and bounded: int() refuses other digits, SQLite integers past 2**63.
        if digits.isascii() and digits.isdigit() and len(digits) <= MAX_VERSION_DIGITS:
            found = await self.store.get_policy_snapshot(int(digits))
            if found is not None:
                return found
        if ":" in text:
            for snapshot in await self.store.list_policy_snapshots():
                if snapshot.snapshot_id == text:
                    return snapshot
        raise UnknownSnapshotError(text)

    async def publish(self, author: str, message: str = "") -> Activation:
        """Compile every draft bundle into a new active snapshot and swap the kernel to it.

        When the drafts compile to the active snapshot id (nothing that decides has
        changed, perhaps only comments), no version is created: the answer is the active
        snapshot with ``changed=False``. Raises :class:`PolicyLoadError`.
        """
        async with self._writes:
            drafts = await self._drafts()
            policy = await self._compile(drafts)
            active = await self.store.active_policy_snapshot()
            if active is not None and active.snapshot_id == policy.snapshot_id:
                return Activation(active, changed=False)
            snapshot = await self._record(policy, drafts, author, message, active)
            self.holder.swap(policy)
        log.info("policy v%d %s published by %s", snapshot.version, snapshot.snapshot_id, author)
        await self._announce(snapshot)
        return Activation(snapshot, changed=True)

    async def rollback(self, ref: str | int, author: str, message: str = "") -> Activation:
        """Make an earlier snapshot active again and reset the drafts to its bundles.

        Rolling back to the active snapshot changes nothing (``changed=False``). Raises
        :class:`UnknownSnapshotError`, or :class:`PolicyLoadError` when the snapshot no
        longer loads (e.g. written for an older, laxer release); nothing changes then.
        """
        async with self._writes:
            target = await self.find_snapshot(ref)
            active = await self.store.active_policy_snapshot()
            if active is not None and active.version == target.version:
                return Activation(active, changed=False)
            policy = await self._compile(target.bundles)
            data: dict[str, str | int | bool | None] = {
                "version": target.version,
                "from_version": None if active is None else active.version,
                "from_snapshot": None if active is None else active.snapshot_id,
                "message": message,
            }
            event = _event("policy.rollback", target.snapshot_id, author, data)
            drafts, resets = await self._reset(
                target.bundles, author, f"rollback to v{target.version}"
            )
            # One write: the activation, the drafts reset to the snapshot's bundles, and
            # the events of both. A crash after it starts on the target with its drafts.
            snapshot = await self.store.activate_policy_snapshot(
                target.version, audit=[event, *resets], bundles=drafts
            )
            self.holder.swap(policy)
        log.warning(
            "policy rolled back to v%d %s by %s", target.version, target.snapshot_id, author
        )
        await self._announce(snapshot)
        return Activation(snapshot, changed=True)

    async def follow(self) -> bool:
        """Put the kernel on the store's active snapshot if another replica changed it;
        True when it swapped. A snapshot that does not load here keeps the current policy
        (last-known-good, invariant 7) and is logged."""
        async with self._writes:
            active = await self.store.active_policy_snapshot()
            if active is None or active.snapshot_id == self.holder.policy.snapshot_id:
                return False
            try:
                policy = await self._compile(active.bundles)
            except PolicyLoadError as exc:
                log.error(
                    "active policy v%d %s does not load here; keeping %s: %s",
                    active.version,
                    active.snapshot_id,
                    self.holder.policy.snapshot_id,
                    exc,
                )
                return False
            self.holder.swap(policy)
        log.info("following the store: policy v%d %s", active.version, active.snapshot_id)
        return True

    async def _announce(self, snapshot: PolicySnapshotRecord) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(snapshot)
        except Exception as exc:  # the others also poll the store: a lost notice only delays
            log.warning("could not announce policy v%d: %s", snapshot.version, exc)

    async def audit(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEvent]:
        """Policy events (bundle edits, publishes, rollbacks), oldest first, after a seq."""
        filters = AuditFilter(
            tenant_id=SYSTEM_CHAIN, after_seq=after_seq, kind_prefix=POLICY_EVENTS
        )
        return await self.store.list_audit(filters, limit=limit)

    # --- start-up ---------------------------------------------------------------------------

    async def sync_at_startup(self, source: PolicySource) -> Activation:
        """Put the kernel on the store's active snapshot, publishing ``source`` when due.

        First start (no snapshot yet): ``source`` becomes version 1 and seeds the drafts.
        Later starts: the store's active snapshot decides, unless ``source`` was named
        explicitly and differs from it, in which case it is published as a new version.
        Raises :class:`StartupPolicyError` when the active snapshot no longer loads.
        """
        async with self._writes:
            active = await self.store.active_policy_snapshot()
            current = self.holder.policy
            if active is None:
                return await self._adopt(source, f"initial policy from {source.origin}", None)
            if source.explicit and active.snapshot_id != current.snapshot_id:
                message = f"loaded from {source.origin} at startup"
                return await self._adopt(source, message, active)
            if active.snapshot_id != current.snapshot_id:
                try:
                    policy = await self._compile(active.bundles)
                except PolicyLoadError as exc:
                    raise StartupPolicyError(
                        f"the active policy snapshot v{active.version} ({active.snapshot_id})"
                        " in the store no longer loads; start with --policy PATH to publish"
                        " one that does",
                        exc.issues,
                    ) from None
                self.holder.swap(policy)
            return Activation(active, changed=False)

    async def _adopt(
        self, source: PolicySource, message: str, active: PolicySnapshotRecord | None
    ) -> Activation:
        """Publish ``source`` at start-up: its snapshot and its bundles as the drafts, in
        one write."""
        # Compiled from the very texts that are stored, so the record and the kernel agree
        # even if the files changed after the caller first loaded them.
        policy = await self._compile(source.bundles)
        drafts, resets = await self._reset(source.bundles, STARTUP_AUTHOR, message)
        if active is not None and active.snapshot_id == policy.snapshot_id:
            if resets:  # the same policy in other words: the drafts take its text
                await self.store.activate_policy_snapshot(
                    active.version, audit=resets, bundles=drafts
                )
            activation = Activation(active, changed=False)
        else:
            snapshot = await self._record(
                policy, source.bundles, STARTUP_AUTHOR, message, active, resets, drafts
            )
            log.info("policy v%d %s: %s", snapshot.version, snapshot.snapshot_id, message)
            activation = Activation(snapshot, changed=True)
        # The policy already held was loaded from the same files, with their paths in its
        # rule sources: keep it when it is the same snapshot.
        if policy.snapshot_id != self.holder.policy.snapshot_id:
            self.holder.swap(policy)
        return activation

    # --- helpers ----------------------------------------------------------------------------

    async def _drafts(self) -> dict[str, str]:
        return {bundle.bundle_id: bundle.text for bundle in await self.store.list_policy_bundles()}

    async def _compile(self, bundles: Mapping[str, str]) -> Policy:
        """Load bundles with the file loader's validation, off the event loop."""
        return await asyncio.to_thread(load_bundles, dict(bundles), max_bytes=self.max_bytes)

    async def _record(
        self,
        policy: Policy,
        bundles: Mapping[str, str],
        author: str,
        message: str,
        active: PolicySnapshotRecord | None,
        resets: Sequence[AuditDraft] = (),
        drafts: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """Store ``policy`` as the next, active version with its ``policy.publish`` event.

        ``drafts`` (with their ``resets`` events, before the publish's) replace the draft
        bundles in the same write. The store fills in the version it assigns.
        """
        snapshot = PolicySnapshotRecord(
            snapshot_id=policy.snapshot_id,
            policy_version=policy.version,
            author=author,
            message=message,
            created_at=self.clock(),
            bundles=dict(bundles),
        )
        data: dict[str, object] = {
            "version": SNAPSHOT_VERSION,
            "policy_version": policy.version,
            "message": message,
            "bundles": ", ".join(sorted(bundles)),
            "from_version": None if active is None else active.version,
            "from_snapshot": None if active is None else active.snapshot_id,
        }
        event = _event("policy.publish", policy.snapshot_id, author, data)
        return await self.store.add_policy_snapshot(
            snapshot, audit=[*resets, event], bundles=drafts
        )

    async def _reset(
        self, bundles: Mapping[str, str], author: str, reason: str
    ) -> tuple[list[PolicyBundleRecord], list[AuditDraft]]:
        """The drafts that equal ``bundles``, and an event for each change, with ``reason``.

        Nothing is written: the caller stores both with the snapshot they belong to. A
        bundle whose text is unchanged keeps its record (who changed it last, and when).
        """
        current = {bundle.bundle_id: bundle for bundle in await self.store.list_policy_bundles()}
        texts = {bundle_id: bundle.text for bundle_id, bundle in current.items()}
        records: list[PolicyBundleRecord] = []
        events: list[AuditDraft] = []
        for bundle_id, text in bundles.items():
            kept = current.get(bundle_id)
            if kept is not None and kept.text == text:
                records.append(kept)
                continue
            records.append(self._bundle(bundle_id, text, author))
            events.append(_put_event(bundle_id, text, author, texts, reason))
        for bundle_id in sorted(set(current) - set(bundles)):
            events.append(_deleted_event(bundle_id, author, texts, reason))
        return records, events

    def _bundle(self, bundle_id: str, text: str, author: str) -> PolicyBundleRecord:
        return PolicyBundleRecord(
            bundle_id=bundle_id, text=text, updated_at=self.clock(), updated_by=author
        )

    async def _write_bundle(
        self, bundle_id: str, text: str, author: str, drafts: Mapping[str, str]
    ) -> PolicyBundleRecord:
        """Store a bundle with its ``policy.bundle.put`` event."""
        record = self._bundle(bundle_id, text, author)
        event = _put_event(bundle_id, text, author, drafts, reason=None)
        await self.store.put_policy_bundle(record, audit=[event])
        return record

    async def _delete_bundle(self, bundle_id: str, author: str, drafts: Mapping[str, str]) -> None:
        """Remove a bundle with its ``policy.bundle.deleted`` event."""
        event = _deleted_event(bundle_id, author, drafts, reason=None)
        await self.store.delete_policy_bundle(bundle_id, audit=[event])


def check_bundle_id(bundle_id: str) -> None:
    """Refuse ids a bundle directory could not hold (they become paths on export).

    The same ids :func:`~cordum.policy.loader.bundle_files` gives files: segments
    separated by ``/``, none empty, ``.`` or ``..``, no control characters or backslashes.
    """
    segments = bundle_id.split("/")
    if (
        not bundle_id
        or len(bundle_id) > MAX_BUNDLE_ID
        or bundle_id != bundle_id.strip()
        or _UNUSABLE_IN_ID.search(bundle_id)
        or any(segment in ("", ".", "..") or segment != segment.strip() for segment in segments)
    ):
        raise InvalidBundleIdError(
            f"bundle id {bundle_id[:80]!r} is not usable: give at most {MAX_BUNDLE_ID}"
            " characters of path-like segments separated by `/`, without control characters,"
            " backslashes, empty, `.` or `..` segments (e.g. `base`, `secops/deny-exfil`)"
        )


def _put_event(
    bundle_id: str, text: str, author: str, drafts: Mapping[str, str], reason: str | None
) -> AuditDraft:
    """A ``policy.bundle.put`` event: the text's digest and size, not the text."""
    data: dict[str, object] = {
        "sha256": text_digest(text),
        "bytes": len(text.encode("utf-8")),
        "created": bundle_id not in drafts,
    }
    if reason is not None:
        data["reason"] = reason
    return _event("policy.bundle.put", bundle_id, author, data)


def _deleted_event(
    bundle_id: str, author: str, drafts: Mapping[str, str], reason: str | None
) -> AuditDraft:
    """A ``policy.bundle.deleted`` event, with the digest of the text that went."""
    data: dict[str, object] = {"sha256": text_digest(drafts[bundle_id])}
    if reason is not None:
        data["reason"] = reason
    return _event("policy.bundle.deleted", bundle_id, author, data)


def _event(kind: str, subject: str, actor: str, data: Mapping[str, object]) -> AuditDraft:
    return AuditDraft(tenant_id=SYSTEM_CHAIN, kind=kind, subject=subject, actor=actor, data=data)
