"""Fixtures for the port contract suites: ``store`` and ``bus`` run once per registered adapter.

Async tests use the anyio pytest plugin (``@pytest.mark.anyio``) on the asyncio backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cordum.ports.bus import Bus
from cordum.ports.store import Store
from tests.ports.adapters import BUS_ADAPTERS, STORE_ADAPTERS, BusAdapter, StoreHarness


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=STORE_ADAPTERS, ids=[a.name for a in STORE_ADAPTERS])
async def store_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    harness = await request.param.open(tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
def store(store_harness: StoreHarness) -> Store:
    return store_harness.store


@pytest.fixture(params=BUS_ADAPTERS, ids=[a.name for a in BUS_ADAPTERS])
def bus_adapter(request: pytest.FixtureRequest) -> BusAdapter:
    return request.param


@pytest.fixture
async def bus(bus_adapter: BusAdapter) -> AsyncIterator[Bus]:
    instance = await bus_adapter.open()
    try:
        yield instance
    finally:
        await instance.close()
