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


async def open_memory_bus() -> Bus:
    """A fresh in-process bus."""
    from cordum.ports.memory_bus import MemoryBus

    return MemoryBus()


def memory_bus_closed_error() -> type[Exception]:
    """What MemoryBus raises when used after close."""
    from cordum.ports.memory_bus import BusClosedError

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
]

BUS_ADAPTERS: list[BusAdapter] = [
    BusAdapter("memory", open_memory_bus, memory_bus_closed_error),
]
