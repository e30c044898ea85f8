"""Fixtures for pipeline tests: the anyio backend and a served control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.pipeline.harness import Harness, running_plane


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the loop the product uses)."""
    return "asyncio"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A control plane with the test policy, served over real HTTP, no workers."""
    async with running_plane(tmp_path, worker_lost_after_s=30.0) as served:
        yield served
