"""Atomic writes to a Redis that many processes share: plan in Python, commit if unchanged.

A write is a *plan*: a plain function that reads records through a :class:`Tx`, checks
them (state machine, idempotency, chain head) and queues the commands of its change,
computing what only Python can (audit hashes: Redis Lua has no SHA-256). The commit is
one Lua script (:data:`COMMIT_SCRIPT`) that first compares every value the plans read
with what Redis holds now and runs their commands only if all still match: an
optimistic transaction, all-or-nothing, whichever process or replica sent it. On a
mismatch the script answers with the current values, and the plans run again on them.

Why a checking script rather than WATCH + MULTI/EXEC: a transition learns which chain
head it appends to (its job's tenant) only by reading the job, so WATCH would need a
round trip per dependency before the commit and a connection held across them; the
script needs one read round trip and one commit, and hands back fresh values on a
conflict instead of a bare "retry". Sequence numbers for listings are taken from
counters inside the script (``INCR``), so their order is the commit order.

Group commit: writes issued while a commit is in flight wait and then go together, in
one read round trip and one script call, each planned on the records as the writes
before it in the batch left them. A plan that raises fails alone (nothing of it is
queued); the others commit. So a process never races itself on a chain head, and a busy
process pays two round trips per batch rather than per write.

Linger: after a commit that carried more than one write (writes are arriving faster
than commits finish), the next commit waits ``linger_s`` (:data:`LINGER_S` unless the
store is told otherwise) so that more writes join it. Each commit has a fixed cost (two
script calls, in Python and in Redis) that a bigger batch shares; without the pause a
busy process commits as fast as it can, in batches of a few writes, and spends that cost
again and again. A write arriving at an idle committer, or after a commit of one write,
never waits.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import orjson
from redis.asyncio import Redis

T = TypeVar("T")

Read = tuple[str, str] | tuple[str, str, str]
"""A value a plan reads: ``("GET", key)`` or ``("HGET", key, field)``."""
Value = bytes | None
Arg = str | int | bool

MAX_BATCH: Final = 256
"""Writes per commit: bounds how long one script holds Redis."""
LINGER_S: Final = 0.005
"""How long a busy committer waits before its next commit, for more writes to join it."""
MAX_CONFLICTS: Final = 100
"""Commits refused because another process changed what was read, before giving up."""
BACKOFF_S: Final = 0.0005
BACKOFF_CAP_S: Final = 0.05

COMMIT_SCRIPT: Final = """#!lua
-- ARGV[1]: JSON [guards, ops]. A guard is [command (GET|HGET), key, field, present,
-- value]; ops is flat: name, argument count, arguments. One JSON argument rather than
-- thousands: the client's per-argument encoding cost more than the whole script.
-- The shebang makes Redis refuse the script up front when it is out of memory, never
-- halfway through the ops.
local payload = cjson.decode(ARGV[1])
local failed = {}
for g, guard in ipairs(payload[1]) do
  local current
  if guard[1] == 'HGET' then
    current = redis.call('HGET', guard[2], guard[3])
  else
    current = redis.call('GET', guard[2])
  end
  local mismatch
  if guard[4] then mismatch = current ~= guard[5] else mismatch = current end
  if mismatch then
    failed[#failed + 1] = g
    failed[#failed + 1] = current
  end
end
if #failed > 0 then return failed end
local ops = payload[2]
local i = 1
while i <= #ops do
  local name, n = ops[i], ops[i + 1]
  local a = i + 2
  if name == '@index' then
    -- all, counter, member, fresh, add count, then sorted sets to add to, then sorted
    -- sets to remove from: the member keeps its score in `all` unless fresh.
    local all, counter, member, n_add = ops[a], ops[a + 1], ops[a + 2], ops[a + 4]
    local score = false
    if not ops[a + 3] then score = redis.call('ZSCORE', all, member) end
    if not score then score = redis.call('INCR', counter) end
    redis.call('ZADD', all, score, member)
    for k = a + 5, a + 4 + n_add do redis.call('ZADD', ops[k], score, member) end
    for k = a + 5 + n_add, a + n - 1 do redis.call('ZREM', ops[k], member) end
  else
    redis.call(name, unpack(ops, a, a + n - 1))
  end
  i = a + n
end
return 1
"""

READ_SCRIPT: Final = """#!lua flags=no-writes
-- ARGV: command (GET|HGET), key, field, repeated; the values, nil for absent ones.
local values = {}
for i = 1, #ARGV, 3 do
  if ARGV[i] == 'HGET' then
    values[#values + 1] = redis.call('HGET', ARGV[i + 1], ARGV[i + 2])
  else
    values[#values + 1] = redis.call('GET', ARGV[i + 1])
  end
end
return values
"""


class StoreContentionError(RuntimeError):
    """Other writers kept changing what a write read; it gave up and wrote nothing."""


class StoreClosedError(RuntimeError):
    """The store was closed."""


class MissingReads(Exception):  # noqa: N818 - a signal between a plan and the committer
    """A plan needs values that were not loaded; the committer loads them and replans."""

    def __init__(self, reads: Collection[Read]) -> None:
        super().__init__(f"{len(reads)} values to load")
        self.reads = frozenset(reads)


def _value(reply: object) -> Value:
    """A script's reply for one key: bytes, or None for an absent one (whether the
    protocol turned Lua's ``false`` into a null or a boolean)."""
    return reply if isinstance(reply, bytes) else None


def text(value: bytes | str) -> str:
    """A reply as text (the store's client returns bytes; its type hints allow both)."""
    return value.decode() if isinstance(value, bytes) else value


class _Overlay:
    """Values as planned writes left them (before they are committed)."""

    def __init__(self) -> None:
        self.written: dict[Read, Value] = {}
        self.cleared: set[str] = set()
        """Hashes deleted as a whole: every field reads as absent unless written after."""

    def lookup(self, read: Read) -> tuple[bool, Value]:
        if read in self.written:
            return True, self.written[read]
        if read[0] == "HGET" and read[1] in self.cleared:
            return True, None
        return False, None

    def clear_hash(self, key: str) -> None:
        self.cleared.add(key)
        for read in [r for r in self.written if r[0] == "HGET" and r[1] == key]:
            del self.written[read]

    def merge(self, later: _Overlay) -> None:
        for key in later.cleared:
            self.clear_hash(key)
        self.written.update(later.written)


class Tx:
    """One write's view of the records, and the commands of its change.

    Reads see this write's own changes, then those of the writes planned before it in
    the batch, then the values loaded from Redis; only the last become commit guards.
    """

    def __init__(self, loaded: Mapping[Read, Value], batch: _Overlay) -> None:
        self._loaded = loaded
        self._batch = batch
        self.own = _Overlay()
        self.guards: dict[Read, Value] = {}
        self.ops: list[tuple[Arg, ...]] = []

    def get(self, key: str) -> bytes | None:
        """The string at ``key``."""
        return self._read(("GET", key))

    def hget(self, key: str, field: str) -> bytes | None:
        """A field of the hash at ``key``."""
        return self._read(("HGET", key, field))

    def need(self, reads: Iterable[Read]) -> None:
        """Ask for every value in ``reads`` at once, before a plan reads them one by one."""
        missing = [r for r in reads if not self._known(r)]
        if missing:
            raise MissingReads(missing)

    def _known(self, read: Read) -> bool:
        return self.own.lookup(read)[0] or self._batch.lookup(read)[0] or read in self._loaded

    def _read(self, read: Read) -> bytes | None:
        for overlay in (self.own, self._batch):
            found, value = overlay.lookup(read)
            if found:
                return value
        if read not in self._loaded:
            raise MissingReads((read,))
        value = self._loaded[read]
        self.guards[read] = value
        return value

    def set(self, key: str, value: str) -> None:
        """``SET key value``."""
        self.own.written[("GET", key)] = value.encode()
        self.ops.append(("SET", key, value))

    def hset(self, key: str, field: str, value: str) -> None:
        """``HSET key field value``."""
        self.own.written[("HGET", key, field)] = value.encode()
        self.ops.append(("HSET", key, field, value))

    def hdel(self, key: str, field: str) -> None:
        """``HDEL key field``."""
        self.own.written[("HGET", key, field)] = None
        self.ops.append(("HDEL", key, field))

    def delete_hash(self, key: str) -> None:
        """``DEL key`` of a hash: every field reads as absent afterwards."""
        self.own.clear_hash(key)
        self.ops.append(("DEL", key))

    def call(self, *command: Arg) -> None:
        """A command whose effect no plan reads back (list pushes, index updates)."""
        self.ops.append(command)

    def index(
        self,
        all_key: str,
        counter: str,
        member: str,
        *,
        fresh: bool,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Place ``member`` in the sorted set ``all_key`` and the sets ``add``, out of ``remove``.

        Its score is the next value of ``counter`` when ``fresh`` or new to ``all_key``,
        else the score it has there, so a record keeps its place in listings.
        """
        added = list(add)
        self.ops.append(("@index", all_key, counter, member, fresh, len(added), *added, *remove))


@dataclass
class _Write:
    plan: Callable[[Tx], Any]
    reads: tuple[Read, ...]
    future: asyncio.Future[Any]


@dataclass
class _Planned:
    results: list[tuple[bool, Any]]
    """Per write: (True, value) or (False, exception)."""
    guards: dict[Read, Value]
    ops: list[bytes]
    """Per write with a change: its ops as JSON array items (see :func:`_encode_ops`)."""
    missing: set[Read]


class Committer:
    """Runs plans in batches and commits each batch atomically (see the module doc)."""

    def __init__(self, redis: Redis, *, linger_s: float = LINGER_S) -> None:
        self._redis = redis
        self._linger_s = linger_s
        self._script = redis.register_script(COMMIT_SCRIPT)
        self._read = redis.register_script(READ_SCRIPT)
        self._queue: list[_Write] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def write(self, plan: Callable[[Tx], T], reads: Iterable[Read] = ()) -> T:
        """Plan and commit one write; its plan's result once it is committed.

        ``reads`` are loaded before the plan first runs (it may read others: they are
        loaded when it asks, at the cost of a round trip).
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        reads = tuple(reads)
        for read in reads:  # a key that cannot be sent fails here, not its whole batch
            for part in read:
                part.encode()
        loop = asyncio.get_running_loop()
        write = _Write(plan, reads, loop.create_future())
        self._queue.append(write)
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="cordum-redis-commit")
        return cast(T, await write.future)

    async def close(self) -> None:
        """Refuse new writes and wait for the queued ones."""
        self._closed = True
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        busy = False
        try:
            while self._queue:
                if busy and len(self._queue) < MAX_BATCH:
                    await asyncio.sleep(self._linger_s)
                batch = self._queue[:MAX_BATCH]
                busy = len(batch) > 1
                del self._queue[:MAX_BATCH]
                try:
                    await self._commit(batch)
                except BaseException as exc:
                    for write in batch:
                        if write.future.done():
                            continue
                        if isinstance(exc, Exception):
                            write.future.set_exception(exc)
                        else:
                            write.future.cancel()
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._task = None

    async def _commit(self, batch: list[_Write]) -> None:
        loaded: dict[Read, Value] = {}
        to_load = {read for write in batch for read in write.reads}
        conflicts = 0
        while True:
            if to_load:
                await self._load(loaded, to_load)
            planned = _plan(batch, loaded)
            if planned.missing:
                to_load = planned.missing
                continue
            if not planned.ops or await self._apply(planned, loaded):
                break
            conflicts += 1
            if conflicts >= MAX_CONFLICTS:
                raise StoreContentionError(
                    f"gave up after {conflicts} attempts: other writers kept changing the"
                    " records this write read (nothing was written)"
                )
            to_load = set()
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_S * 2**conflicts)))
        for write, (ok, value) in zip(batch, planned.results, strict=True):
            if write.future.done():
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    async def _load(self, loaded: dict[Read, Value], reads: Collection[Read]) -> None:
        ordered = list(reads)
        args = [part for read in ordered for part in (read[0], read[1], read[-1])]
        values = await self._read(args=args)
        loaded.update(zip(ordered, map(_value, values), strict=True))

    async def _apply(self, planned: _Planned, loaded: dict[Read, Value]) -> bool:
        """Run the commit script; on a conflict, take the current values it returns."""
        guards = list(planned.guards.items())
        checks = [
            (read[0], read[1], read[-1], value is not None, (value or b"").decode())
            for read, value in guards
        ]
        encoded = orjson.dumps(checks)
        payload = b"[" + encoded + b",[" + b",".join(planned.ops) + b"]]"
        reply = await self._script(args=[payload])
        if reply == 1:
            return True
        for position in range(0, len(reply), 2):
            read, _ = guards[int(reply[position]) - 1]
            loaded[read] = _value(reply[position + 1])
        return False


def _plan(batch: list[_Write], loaded: Mapping[Read, Value]) -> _Planned:
    """Every write's plan, in order, each on the records as the ones before it left them."""
    overlay = _Overlay()
    planned = _Planned(results=[], guards={}, ops=[], missing=set())
    for write in batch:
        if write.future.done():  # its caller was cancelled before it was planned
            planned.results.append((False, None))
            continue
        tx = Tx(loaded, overlay)
        try:
            value = write.plan(tx)
            ops = _encode_ops(tx.ops) if tx.ops else None
        except MissingReads as missing:
            planned.missing |= missing.reads
            planned.results.append((False, missing))
            continue
        except Exception as exc:
            planned.results.append((False, exc))
            continue
        planned.results.append((True, value))
        if ops is not None:
            overlay.merge(tx.own)
            planned.guards.update(tx.guards)
            planned.ops.append(ops)
    return planned


def _encode_ops(ops: list[tuple[Arg, ...]]) -> bytes:
    """One write's ops for the commit script: ``name, argument count, arguments...``.

    Encoded per write, so a value that cannot be sent fails its own write only.
    """
    flat: list[Arg] = []
    for op in ops:
        flat += [op[0], len(op) - 1, *op[1:]]
    return orjson.dumps(flat)[1:-1]
