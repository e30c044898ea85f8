"""Reads of one key each, coalesced: the GETs issued while one is in flight go as one MGET.

A busy scheduler reads a job for every notice it handles; one round trip per read costs
more CPU in the client (redis-py's command machinery, the event loop's socket writes)
than the reads cost Redis. Coalescing changes nothing a caller sees: each still gets the
value its key held when the read was served.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

MAX_KEYS = 512
"""Keys per MGET: bounds how long one read holds Redis."""


class CoalescedGets:
    """``GET`` for many concurrent callers, in as few round trips as possible."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
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
                    values = await self._redis.mget(keys)
                except BaseException as exc:
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                if isinstance(exc, Exception):
                                    future.set_exception(exc)
                                else:
                                    future.cancel()
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
