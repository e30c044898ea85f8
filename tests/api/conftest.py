"""Fixtures for the HTTP API tests: the anyio backend and a served control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.support import served
from tests.pipeline.harness import Harness


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """asyncio, module-scoped so a module may share one served plane across its tests."""
    return "asyncio"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A control plane with the API test policy over real HTTP; no workers.

    ``job.test.>`` is mapped to pool ``p``, so without a worker an allowed job waits in
    PENDING (retried with the default 1 s backoff) rather than failing at once.
    """
    async with served(tmp_path) as harness:
        yield harness
