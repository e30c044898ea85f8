"""Newest-first pages over sorted-set indexes, shared by the Redis store's listings.

Every listing (jobs, DLQ, approvals) keeps its ids in sorted sets scored by a sequence
number taken when the record was first written, and pages the way the SQLite store
does: newest first, ``limit`` at a time, the last record's number as the cursor (so a
cursor stays valid when records are removed). A listing may read several indexes at
once (one per state, per status or per tenant) and merges them by score.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio import Redis

from cordum.ports.sqlite_pages import cursor_value

T = TypeVar("T")

MAX_CHUNK = 1000
"""Ids read per index and round trip when a filter drops some of them."""

Loader = Callable[[list[bytes]], Awaitable[list[T | None]]]
"""Loads the records of some ids, None for those the filter drops."""


def page_bound(cursor: str | None) -> str:
    """The ``ZREVRANGEBYSCORE`` upper bound of a page; ValueError for a bad cursor."""
    return "+inf" if cursor is None else f"({cursor_value(cursor)}"


async def newest_first(
    redis: Redis, indexes: Sequence[str], load: Loader[T], *, cursor: str | None, limit: int
) -> tuple[list[T], str | None]:
    """One page of the records in any of ``indexes`` that ``load`` keeps, and the next cursor."""
    bound = page_bound(cursor)
    found: list[tuple[int, T]] = []
    chunk = limit + 1
    while indexes and len(found) <= limit:
        pipe = redis.pipeline(transaction=False)
        for index in indexes:
            pipe.zrevrangebyscore(index, bound, "-inf", start=0, num=chunk, withscores=True)
        replies: list[list[tuple[bytes, float]]] = await pipe.execute()
        # An index that returned a full chunk may hold more below its last score: the
        # merge is complete only down to the highest such score.
        cut = max((reply[-1][1] for reply in replies if len(reply) == chunk), default=None)
        merged = sorted(
            (pair for reply in replies for pair in reply if cut is None or pair[1] >= cut),
            key=lambda pair: pair[1],
            reverse=True,
        )
        records = await load([member for member, _ in merged])
        found += [
            (int(score), record)
            for (_, score), record in zip(merged, records, strict=True)
            if record is not None
        ]
        if cut is None:
            break
        bound = f"({int(cut)}"
        chunk = min(chunk * 2, MAX_CHUNK)
    page = found[:limit]
    next_cursor = str(page[-1][0]) if len(found) > limit and page else None
    return [record for _, record in page], next_cursor
