"""The audit chains of the Redis store: events recorded by writes, sealed, and read.

A chain is a list of rows (the event with seq ``n`` at index ``n - 1``), a head key
``"<seq> <event_hash>"`` and a list of pending events. A write records its events as
pending in its own atomic commit; sealing then appends them to the chain in commit order
(see :class:`AuditChains`); the rows are byte for byte what the SQLite store writes for
the same events (same :class:`~cordum.models.audit.ChainHasher`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from typing import Any

import orjson
from redis.asyncio import Redis

from cordum.models.audit import (
    GENESIS_HASH,
    AuditCheckpoint,
    AuditDraft,
    AuditEvent,
    AuditRow,
    ChainHasher,
    body_frame,
    canonical,
)
from cordum.ports.redis_commit import Committer, Tx, text
from cordum.ports.redis_keys import Keys
from cordum.ports.sqlite_audit import AuditKeyMismatchError, event_from_row
from cordum.ports.store import AuditFilter

SCAN_CHUNK = 1000
"""Rows read per round trip while a filter skips some."""
LAST_INDEX = 2**62
"""Beyond any list: larger (cursor-given) positions are not sent to Redis, which refuses
indexes past 64 bits, and negative ones would count from the end."""


async def check_sealing(redis: Redis, keys: Keys, hasher: ChainHasher) -> None:
    """Remember how this namespace's chains are sealed; refuse to continue them differently.

    As :func:`cordum.ports.sqlite_audit.check_sealing`: a replica started without the
    HMAC key (or with another) must not seal events that would all verify as modified.
    """
    mark = f"{hasher.algorithm} {hasher.fingerprint}"
    stored = await redis.set(keys.audit_sealing, mark, nx=True, get=True)
    if not isinstance(stored, bytes | str) or text(stored) == mark:
        return
    had = "an HMAC key" if text(stored).startswith("hmac-sha256 ") else "no HMAC key"
    given = "another key" if hasher.algorithm == "hmac-sha256" else "none"
    raise AuditKeyMismatchError(
        f"this store's audit chains are sealed with {had}, but {given} was given;"
        " set CORDUM_AUDIT_HMAC_KEY to the key the store was created with"
    )


def parse_head(raw: bytes | str | None) -> tuple[int, str]:
    """``(seq, event_hash)`` from a head key's value (``(0, GENESIS_HASH)`` when absent)."""
    if raw is None:
        return 0, GENESIS_HASH
    seq, event_hash = text(raw).split(" ")
    return int(seq), event_hash


def subject_member(subject: str, seq: int) -> str:
    """The member of :meth:`Keys.audit_subjects` for one event; sorts by subject, then seq."""
    return f"{subject}\0{seq:020d}"


def _row(raw: bytes | str) -> AuditRow:
    return AuditRow._make(orjson.loads(raw))


def _matches(row: AuditRow, filters: AuditFilter) -> bool:
    if filters.kinds and row.kind not in filters.kinds:
        return False
    if filters.kind_prefix is not None and not row.kind.startswith(filters.kind_prefix):
        return False
    if filters.subject is not None and row.subject != filters.subject:
        return False
    if filters.actor is not None and row.actor != filters.actor:
        return False
    if filters.since_ms is not None and row.at_ms < filters.since_ms:
        return False
    return filters.until_ms is None or row.at_ms < filters.until_ms


SEAL_BATCH = 2000
"""Pending events sealed per round trip."""
LOCK_POLL_S = 0.002
MAX_LOCK_POLL_S = 0.05
"""A sealer waiting for the lock asks again after 2 ms, then twice as long each time, up
to 50 ms (a seal round takes a few milliseconds)."""
SEALER_LOCK_MS = 2000
"""How long the sealer lock outlives a sealer that died holding it."""
SEAL_PATIENCE_S = 10.0
"""How long a seal waits for a sealer lock another process holds while no chain it
seals moves on, before giving up; the events stay pending for the next seal."""
LOCKED, BUSY, NOTHING_PENDING = 1, -1, 0
"""What :data:`SEAL_READ_SCRIPT` found: the lock taken for this sealer, the lock held by
another process, nothing to seal."""

SEAL_READ_SCRIPT = """
-- ARGV: sealer lock key, token, lock ms, batch, force (1: the caller brings events of
-- its own), then head key and pending key of each chain. Replies {0} when nothing is
-- pending; {-1, head, head, ...} when another process holds the lock; else takes the
-- lock and replies {1, head, pending, head, pending, ...} (false: an empty chain's head).
local any = ARGV[5] == '1'
for i = 7, #ARGV, 2 do
  if not any and redis.call('LLEN', ARGV[i]) > 0 then any = true end
end
if not any then return {0} end
local locked = redis.call('SET', ARGV[1], ARGV[2], 'NX', 'PX', ARGV[3])
local reply = {-1}
if locked then reply[1] = 1 end
for i = 6, #ARGV, 2 do
  reply[#reply + 1] = redis.call('GET', ARGV[i])
  if locked then
    reply[#reply + 1] = redis.call('LRANGE', ARGV[i + 1], 0, tonumber(ARGV[4]) - 1)
  end
end
return reply
"""

SEAL_SCRIPT = """
-- ARGV[1]: JSON list of chains: [head_key, expected_head, pending_key, taken, rows_key,
-- rows, subjects_key, members, new_head, chains_key, tenant]; ARGV[2], ARGV[3]: the
-- sealer lock and this sealer's token (the lock is released either way). All or
-- nothing: any head that moved since it was read means the lock expired and another
-- sealer won; nothing is written.
local plan = cjson.decode(ARGV[1])
local function release()
  if redis.call('GET', ARGV[2]) == ARGV[3] then redis.call('DEL', ARGV[2]) end
end
for _, c in ipairs(plan) do
  if (redis.call('GET', c[1]) or '') ~= c[2] then
    release()
    return 0
  end
end
for _, c in ipairs(plan) do
  if c[4] > 0 then
    redis.call('LTRIM', c[3], c[4], -1)
  end
  for _, row in ipairs(c[6]) do
    redis.call('RPUSH', c[5], row)
  end
  for _, member in ipairs(c[8]) do
    redis.call('ZADD', c[7], 0, member)
  end
  redis.call('SET', c[1], c[9])
  redis.call('SADD', c[10], c[11])
end
release()
return 1
"""


class AuditSealingError(RuntimeError):
    """Other sealers kept winning; the events stay pending for the next seal."""


class AuditChains:
    """Records a write's events as pending, and seals pending events into the chains.

    A write records its events in its own commit (a list push, no read): so writes of
    many replicas never contend on a chain's head, which every event of a tenant would
    otherwise have to read and guard. Sealing, moments later, gives the pending events
    their sequence numbers and hashes in the order their writes committed; whoever seals
    seals every replica's pending events. Every read of a chain seals first, so no reader
    ever sees a pending event, and a replica that dies before sealing loses nothing: its
    events wait in Redis for the next seal.
    """

    def __init__(self, keys: Keys, hasher: ChainHasher) -> None:
        self.keys = keys
        self.hasher = hasher
        self.touched: set[str] = set()
        """Chains this process recorded events to since its sealer last ran."""
        self.wake: asyncio.Event | None = None

    def seal(self, tx: Tx, draft: AuditDraft) -> None:
        """Record ``draft`` as pending in ``tx`` (sealed right after the write commits).

        Its canonical form is made now, so an event that cannot be sealed (a float, a
        non-JSON value) fails its write, as it would if it were sealed in it.
        """
        at = int(time.time() * 1000) if draft.at_ms is None else draft.at_ms
        body_frame(
            tenant_id=draft.tenant_id,
            seq=1,
            kind=draft.kind,
            at_ms=at,
            actor=draft.actor,
            subject=draft.subject,
            prev_hash=GENESIS_HASH,
        )
        entry = [draft.kind, at, draft.actor, draft.subject, canonical(dict(draft.data))]
        tx.call(
            "RPUSH",
            self.keys.audit_pending(draft.tenant_id),
            orjson.dumps(entry).decode(),
        )
        tx.call("SADD", self.keys.audit_chains, draft.tenant_id)
        self.touched.add(draft.tenant_id)
        if self.wake is not None:
            self.wake.set()

    def seal_all(self, tx: Tx, drafts: Sequence[AuditDraft]) -> None:
        """Record every draft, in order."""
        for draft in drafts:
            self.seal(tx, draft)

    async def seal_pending(
        self, redis: Redis, tenants: Iterable[str], extra: Sequence[AuditDraft] = ()
    ) -> list[AuditRow]:
        """Seal every pending event of ``tenants``, then ``extra`` after them; returns the
        rows of ``extra``, in its order.

        One process seals a namespace at a time: the read that finds events pending also
        takes the sealer lock, and a process that finds it taken waits for it instead of
        hashing events another process is sealing (replicas sealing one busy chain lost a
        third of their rounds that way). The lock only saves work: the seal script still
        writes nothing if a head moved since it was read (a lock that expired under a
        stalled sealer), so two sealers never seal the same events twice.
        """
        names = sorted(set(tenants) | {draft.tenant_id for draft in extra})
        token = secrets.token_hex(8)
        deadline = time.monotonic() + SEAL_PATIENCE_S
        wait, seen = LOCK_POLL_S, None
        while True:
            status, read = await self._read_for_seal(redis, names, token, force=bool(extra))
            if status == NOTHING_PENDING:
                return []
            if status == LOCKED:  # the lock is ours until the seal script releases it
                heads, pendings = read[0::2], read[1::2]
                more = any(len(pending) >= SEAL_BATCH for pending in pendings)
                try:
                    plan, sealed = self._plan(names, heads, pendings, () if more else extra)
                except Exception:
                    await self._seal(redis, [], token)
                    raise
                if await self._seal(redis, plan, token):
                    if not more:
                        return [sealed[id(draft)] for draft in extra]
                    continue
                # The lock expired under this sealer and another one won: read again.
            elif read != seen:  # another process holds the lock and the chains move on
                deadline, seen = time.monotonic() + SEAL_PATIENCE_S, read
            if time.monotonic() > deadline:
                raise AuditSealingError(
                    f"could not seal the audit chains of {', '.join(names)}: another process"
                    f" held the sealer lock for {SEAL_PATIENCE_S:.0f} s without sealing"
                )
            if status == BUSY:
                await asyncio.sleep(wait)
                wait = min(wait * 2, MAX_LOCK_POLL_S)

    async def _read_for_seal(
        self, redis: Redis, names: list[str], token: str, *, force: bool
    ) -> tuple[int, list[Any]]:
        """What :data:`SEAL_READ_SCRIPT` replies for ``names``: its status and the rest.

        LOCKED (the lock is now this sealer's): heads and pending events, alternating;
        BUSY (another process's): the heads; NOTHING_PENDING (and nothing forced).
        """
        args: list[str | int] = [self.keys.audit_sealer, token, SEALER_LOCK_MS, SEAL_BATCH]
        args.append(1 if force else 0)
        for tenant in names:
            args += [self.keys.audit_head(tenant), self.keys.audit_pending(tenant)]
        status, *rest = await redis.eval(SEAL_READ_SCRIPT, 0, *args)
        return int(status), rest

    async def _seal(self, redis: Redis, plan: list[list[Any]], token: str) -> bool:
        """Run the seal script (an empty plan only releases the lock); False when a head
        moved since it was read."""
        sealer = self.keys.audit_sealer
        return bool(await redis.eval(SEAL_SCRIPT, 0, orjson.dumps(plan), sealer, token))

    def _plan(
        self,
        names: list[str],
        heads: list[Any],
        pendings: list[list[Any]],
        extra: Sequence[AuditDraft],
    ) -> tuple[list[list[Any]], dict[int, AuditRow]]:
        plan: list[list[Any]] = []
        sealed: dict[int, AuditRow] = {}
        for tenant, raw_head, pending in zip(names, heads, pendings, strict=True):
            own = [draft for draft in extra if draft.tenant_id == tenant]
            if not pending and not own:
                continue
            entries = [orjson.loads(raw) for raw in pending]
            for draft in own:
                at = int(time.time() * 1000) if draft.at_ms is None else draft.at_ms
                entries.append(
                    [draft.kind, at, draft.actor, draft.subject, canonical(dict(draft.data))]
                )
            seq, prev = parse_head(raw_head)
            rows, members = [], []
            for position, entry in enumerate(entries):
                row = self._row(tenant, seq + 1, prev, *entry)
                seq, prev = row.seq, row.event_hash
                rows.append(orjson.dumps(tuple(row)).decode())  # a NamedTuple is no list to orjson
                if row.subject is not None:
                    members.append(subject_member(row.subject, seq))
                if position >= len(pending):
                    sealed[id(own[position - len(pending)])] = row
            plan.append(
                [
                    self.keys.audit_head(tenant),
                    "" if raw_head is None else text(raw_head),
                    self.keys.audit_pending(tenant),
                    len(pending),
                    self.keys.audit_rows(tenant),
                    rows,
                    self.keys.audit_subjects(tenant),
                    members,
                    f"{seq} {prev}",
                    self.keys.audit_chains,
                    tenant,
                ]
            )
        return plan, sealed

    def _row(
        self,
        tenant_id: str,
        seq: int,
        prev: str,
        kind: str,
        at_ms: int,
        actor: str | None,
        subject: str | None,
        data: str,
    ) -> AuditRow:
        """The sealed row of a recorded event (``data`` already canonical)."""
        prefix, suffix = body_frame(
            tenant_id=tenant_id,
            seq=seq,
            kind=kind,
            at_ms=at_ms,
            actor=actor,
            subject=subject,
            prev_hash=prev,
        )
        body = prefix + data + suffix
        event_hash = self.hasher.digest(prev, body)
        return AuditRow(tenant_id, seq, kind, at_ms, actor, subject, prev, event_hash, body)


class AuditTrail:
    """The audit methods of :class:`~cordum.ports.redis_store.RedisStore` (a mixin)."""

    _keys: Keys
    _chains: AuditChains
    _commit: Committer

    async def _ready(self) -> Redis:
        raise NotImplementedError  # provided by RedisStore

    async def append_audit(self, drafts: Sequence[AuditDraft]) -> list[AuditEvent]:
        """See :meth:`cordum.ports.store.Store.append_audit` (sealed after every event
        already pending in those chains, in one script)."""
        redis = await self._ready()
        rows = await self._chains.seal_pending(redis, (), drafts)
        return [event_from_row(row) for row in rows]

    async def _sealed(self, tenant_id: str) -> Redis:
        """Redis, once every pending event of the chain is sealed (what reads see)."""
        redis = await self._ready()
        await self._chains.seal_pending(redis, [tenant_id])
        return redis

    async def seal_touched(self, redis: Redis) -> None:
        """Seal the chains this process recorded events to (its sealer's job); chains
        whose seal failed stay to be sealed next time."""
        chains = self._chains
        while chains.touched:
            touched, chains.touched = chains.touched, set()
            try:
                await chains.seal_pending(redis, touched)
            except BaseException:
                chains.touched |= touched
                raise

    async def list_audit(self, filters: AuditFilter, *, limit: int = 1000) -> list[AuditEvent]:
        """See :meth:`cordum.ports.store.Store.list_audit`."""
        redis = await self._sealed(filters.tenant_id)
        events: list[AuditEvent] = []
        if limit <= 0:
            return events
        if filters.subject is not None:
            rows = self._rows_of_subject(
                redis, filters.tenant_id, filters.subject, filters.after_seq
            )
        else:
            chunk = SCAN_CHUNK if _filtering(filters) else min(limit, SCAN_CHUNK)
            rows = self._rows_after(redis, filters.tenant_id, filters.after_seq, chunk)
        async with aclosing(rows):
            async for row in rows:
                if _matches(row, filters):
                    events.append(event_from_row(row))
                    if len(events) >= limit:
                        break
        return events

    async def audit_rows(
        self, tenant_id: str, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[AuditRow]:
        """See :meth:`cordum.ports.store.Store.audit_rows`."""
        redis = await self._sealed(tenant_id)
        start = max(after_seq, 0)
        if limit <= 0 or start > LAST_INDEX:
            return []
        end = min(start + limit - 1, LAST_INDEX)
        return [
            _row(item) for item in await redis.lrange(self._keys.audit_rows(tenant_id), start, end)
        ]

    async def audit_chains(self) -> list[str]:
        """See :meth:`cordum.ports.store.Store.audit_chains`."""
        redis = await self._ready()
        return sorted(text(member) for member in await redis.smembers(self._keys.audit_chains))

    async def audit_head(self, tenant_id: str) -> tuple[int, str]:
        """See :meth:`cordum.ports.store.Store.audit_head`."""
        redis = await self._sealed(tenant_id)
        return parse_head(await redis.get(self._keys.audit_head(tenant_id)))

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """See :meth:`cordum.ports.store.Store.add_audit_checkpoint`."""
        await self._ready()
        key = self._keys.audit_checkpoints(checkpoint.tenant_id)
        data = checkpoint.model_dump_json()
        await self._commit.write(lambda tx: tx.hset(key, str(checkpoint.seq), data))

    async def list_audit_checkpoints(self, tenant_id: str) -> list[AuditCheckpoint]:
        """See :meth:`cordum.ports.store.Store.list_audit_checkpoints`."""
        redis = await self._ready()
        stored = await redis.hgetall(self._keys.audit_checkpoints(tenant_id))
        return [
            AuditCheckpoint.model_validate_json(stored[seq])
            for seq in sorted(stored, key=lambda seq: int(seq))
        ]

    async def _rows_after(
        self, redis: Redis, tenant_id: str, after_seq: int, chunk: int
    ) -> AsyncGenerator[AuditRow, None]:
        key = self._keys.audit_rows(tenant_id)
        start = max(after_seq, 0)
        while start <= LAST_INDEX:
            raw = await redis.lrange(key, start, min(start + chunk - 1, LAST_INDEX))
            for item in raw:
                yield _row(item)
            if len(raw) < chunk:
                return
            start += chunk

    async def _rows_of_subject(
        self, redis: Redis, tenant_id: str, subject: str, after_seq: int
    ) -> AsyncGenerator[AuditRow, None]:
        """The subject's rows from its index, not a scan of the chain."""
        index = self._keys.audit_subjects(tenant_id)
        rows_key = self._keys.audit_rows(tenant_id)
        low = b"[" + subject_member(subject, after_seq + 1).encode()
        high = b"[" + subject.encode() + b"\0\xff"
        while True:
            members = await redis.zrangebylex(index, low, high, start=0, num=SCAN_CHUNK)
            seqs = [int(text(member).rsplit("\0", 1)[1]) for member in members]
            pipe = redis.pipeline(transaction=False)
            for seq in seqs:
                pipe.lindex(rows_key, seq - 1)
            for item in await pipe.execute():
                if item is not None:
                    yield _row(item)
            if len(members) < SCAN_CHUNK:
                return
            low = b"(" + text(members[-1]).encode()


def _filtering(filters: AuditFilter) -> bool:
    """Whether rows after ``after_seq`` may be skipped (so reads cannot stop at ``limit``)."""
    values: list[Any] = [filters.kind_prefix, filters.actor, filters.since_ms, filters.until_ms]
    return bool(filters.kinds) or any(value is not None for value in values)
