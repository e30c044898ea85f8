"""Reads of one key each, coalesced: the reads issued while one is in flight go as one
MGET (or HMGET, for the fields of one hash).

A busy scheduler reads a job for every notice it handles, and a gateway an API key for
every request; one round trip per read costs more CPU in the client (redis-py's command
machinery, the event loop's socket writes) than the reads cost Redis. Coalescing changes
nothing a caller sees: a read is served by a command sent after it was asked for, so it
sees the value its key held then (a key revoked before the request came is never read
as active).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Fetch = Callable[[list[str]], Awaitable[Sequence[Any]]]
"""Values of many keys in one round trip, in their order (``redis.mget``, say)."""

MAX_KEYS = 512
"""Keys per MGET: bounds how long one read holds Redis."""


class CoalescedGets:
    """``GET`` for many concurrent callers, in as few round trips as possible.

    ``CoalescedGets(redis.mget)`` reads keys; ``CoalescedGets(lambda fields:
    redis.hmget(name, fields))`` reads the fields of one hash.
    """

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._waiting: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` (None when absent)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._task is None:
            self._task = loop.create_task(self._serve(), name="cordum-redis-gets")
        return await future

    async def idle(self) -> None:
        """Wait until every read asked for so far is answered."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _serve(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[:MAX_KEYS]
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    values = await self._fetch(keys)
                except BaseException as exc:
                    _fail([future for futures in batch.values() for future in futures], exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for key, value in zip(keys, values, strict=True):
                    raw = value.encode() if isinstance(value, str) else value
                    for future in batch[key]:
                        if not future.done():
                            future.set_result(raw)
        finally:
            self._task = None


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    """Hand ``exc`` to every caller still waiting (a cancellation cancels them)."""
    for future in futures:
        if not future.done():
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                future.cancel()
