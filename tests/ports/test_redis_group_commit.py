"""The Redis store's group commit and its linger, on a real Redis.

Writes that arrive while a commit is in flight go together in the next one; after a
commit of more than one write (the process is busy), the next commit lingers so that
more writes join it. Pinned here: what lingers and what does not. A write arriving at an
idle committer, or after a commit of a single write, is never held back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from cordum.ports.redis_commit import Committer, Tx
from tests import backing

pytestmark = pytest.mark.anyio

LONG_LINGER_S = 30.0
"""Longer than any test may take: a write that lingered would time the test out."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    """A client of the test Redis and a key prefix of this test's own (the tests write
    the keys ``a`` to ``e`` under it)."""
    client = Redis.from_url(backing.redis().require())
    prefix = backing.unique_prefix("group-commit") + ":"
    try:
        yield client, prefix
    finally:
        await client.delete(*(prefix + name for name in "abcde"))
        await client.aclose()


class CountedCommitter(Committer):
    """A committer that lists the keys each of its commit script calls wrote."""

    def __init__(self, redis: Redis, *, linger_s: float) -> None:
        super().__init__(redis, linger_s=linger_s)
        self.commits: list[list[str]] = []
        self._writing: list[str] = []
        script = self._script

        async def counted(**kwargs: Any) -> Any:
            self.commits.append(sorted(self._writing))
            self._writing = []
            return await script(**kwargs)

        self._script = counted  # type: ignore[assignment]

    def setter(self, key: str, then: Callable[[], None] = lambda: None) -> Callable[[Tx], None]:
        """A plan that sets ``key`` and calls ``then`` while its batch is being planned."""

        def plan(tx: Tx) -> None:
            tx.set(key, "1")
            self._writing.append(key)
            then()

        return plan


async def late_writes(committer: CountedCommitter, prefix: str) -> list[str]:
    """Five writes: a and b together; c and d sent while their commit is in flight; e
    shortly after it, while c and d may still be waiting. Their keys, in that order."""
    late: list[asyncio.Task[None]] = []

    def send_late() -> None:
        for name in ("c", "d"):
            late.append(asyncio.create_task(committer.write(committer.setter(prefix + name))))

    await asyncio.gather(
        committer.write(committer.setter(prefix + "a", then=send_late)),
        committer.write(committer.setter(prefix + "b")),
    )
    await asyncio.sleep(0.05)
    await asyncio.gather(committer.write(committer.setter(prefix + "e")), *late)
    return [prefix + name for name in "abcde"]


async def test_writes_arriving_during_a_busy_commit_linger_and_go_together(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    committer = CountedCommitter(client, linger_s=0.3)
    k = await late_writes(committer, prefix)
    # c and d were queued behind a busy commit: the committer lingered, and e joined them.
    assert committer.commits == [[k[0], k[1]], [k[2], k[3], k[4]]]
    assert await client.mget(k) == [b"1"] * 5


async def test_without_a_linger_the_late_writes_commit_as_soon_as_they_can(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    committer = CountedCommitter(client, linger_s=0.0)
    k = await late_writes(committer, prefix)
    assert committer.commits == [[k[0], k[1]], [k[2], k[3]], [k[4]]]


async def test_a_write_to_an_idle_committer_never_lingers(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    committer = CountedCommitter(client, linger_s=LONG_LINGER_S)
    await asyncio.gather(
        committer.write(committer.setter(prefix + "a")),
        committer.write(committer.setter(prefix + "b")),
    )
    start = time.monotonic()
    await asyncio.wait_for(committer.write(committer.setter(prefix + "c")), 5)
    assert time.monotonic() - start < 5
    assert len(committer.commits) == 2


async def test_a_write_queued_behind_a_single_write_never_lingers(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    committer = CountedCommitter(client, linger_s=LONG_LINGER_S)
    late: list[asyncio.Task[None]] = []

    def send_late() -> None:
        late.append(asyncio.create_task(committer.write(committer.setter(prefix + "b"))))

    await committer.write(committer.setter(prefix + "a", then=send_late))
    await asyncio.wait_for(late[0], 5)
    assert committer.commits == [[prefix + "a"], [prefix + "b"]]
