"""Every Store and Bus adapter the contract suites run against.

Adding an adapter (a Redis store, a NATS bus) is one entry appended to ``STORE_ADAPTERS``
or ``BUS_ADAPTERS``: a name (the pytest id) and an async factory. A factory that needs a
server it cannot reach should call ``pytest.skip`` with the reason.

Store factories return a :class:`StoreHarness` rather than the bare store, so that tests
which need adapter-specific powers (closing and reopening the same data, for durability)
can ask for them and skip with the adapter's own reason when it has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cordum.ports.bus import Bus
from cordum.ports.store import Store
from tests import backing


class StoreHarness:
    """A live store plus what a test may do to it beyond the Store protocol."""

    #: Why this adapter cannot be reopened (None: :meth:`reopen` works).
    reopen_unsupported: str | None = "this adapter keeps nothing once closed"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def reopen(self) -> Store:
        """Close the store and open a new one on the same data; returns (and keeps) it."""
        raise NotImplementedError(self.reopen_unsupported)

    async def close(self) -> None:
        """Release the current store."""
        await self.store.close()


class SqliteHarness(StoreHarness):
    """:class:`~cordum.ports.sqlite_store.SqliteStore` on a file in the test's directory."""

    reopen_unsupported = None

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> Store:
        from cordum.ports.sqlite_store import SqliteStore

        return SqliteStore(self.path)

    async def reopen(self) -> Store:
        await self.store.close()
        self.store = self._open()
        return self.store


async def open_sqlite(tmp: Path) -> StoreHarness:
    """A fresh SQLite store file under ``tmp``."""
    return SqliteHarness(tmp / "cordum.db")


class RedisHarness(StoreHarness):
    """:class:`~cordum.ports.redis_store.RedisStore` in a key namespace of its own.

    Closing deletes the namespace, so runs (and parallel tests) never see each other.
    """

    reopen_unsupported = None

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        super().__init__(self._open())

    def _open(self) -> Store:
        from cordum.ports.redis_store import RedisStore

        return RedisStore(self.url, prefix=self.prefix)

    async def reopen(self) -> Store:
        await self.store.close()
        self.store = self._open()
        return self.store

    async def close(self) -> None:
        from cordum.ports.redis_store import RedisStore

        store = self.store
        assert isinstance(store, RedisStore)
        try:
            await store.flush_namespace()
        finally:
            await store.close()


async def open_redis(tmp: Path) -> StoreHarness:
    """A fresh Redis store namespace on the test session's Redis."""
    return RedisHarness(backing.redis().require(), f"{backing.unique_prefix('store')}:")


async def open_memory_bus() -> Bus:
    """A fresh in-process bus."""
    from cordum.ports.memory_bus import MemoryBus

    return MemoryBus()


def memory_bus_closed_error() -> type[Exception]:
    """What MemoryBus raises when used after close."""
    from cordum.ports.memory_bus import BusClosedError

    return BusClosedError


async def open_nats_bus() -> Bus:
    """A bus on the session's NATS, in a subject namespace no other test uses."""
    from cordum.ports.nats_bus import NatsBus

    url = backing.nats().require()
    return await NatsBus.connect(url, name="contract", subject_prefix=backing.unique_prefix("bus"))


async def open_nats_jetstream_bus() -> Bus:
    """The same with every subject durable, so queue groups run on JetStream consumers.

    The stream is the test's own (named after its prefix) and deleted on close.
    """
    from cordum.ports.nats_bus import NatsBus

    return await NatsBus.connect(
        backing.nats().require(),
        name="contract-js",
        subject_prefix=backing.unique_prefix("busjs"),
        durable_subjects=[">"],
        delete_stream_on_close=True,
    )


def nats_closed_error() -> type[Exception]:
    """What NatsBus raises when used after close."""
    from cordum.ports.nats_bus import BusClosedError

    return BusClosedError


@dataclass(frozen=True)
class StoreAdapter:
    """A Store implementation under test."""

    name: str
    open: Callable[[Path], Awaitable[StoreHarness]]


@dataclass(frozen=True)
class BusAdapter:
    """A Bus implementation under test."""

    name: str
    open: Callable[[], Awaitable[Bus]]
    #: The exception type publish/subscribe raise once the bus is closed.
    closed_error: Callable[[], type[Exception]]


STORE_ADAPTERS: list[StoreAdapter] = [
    StoreAdapter("sqlite", open_sqlite),
    StoreAdapter("redis", open_redis),
]

BUS_ADAPTERS: list[BusAdapter] = [
    BusAdapter("memory", open_memory_bus, memory_bus_closed_error),
    BusAdapter("nats", open_nats_bus, nats_closed_error),
    BusAdapter("nats-jetstream", open_nats_jetstream_bus, nats_closed_error),
]
