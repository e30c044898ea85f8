"""Fixtures for SDK tests: the anyio backend, an in-loop demo plane, a subprocess server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cordum.demo import demo_policy_text
from cordum.demo.workers import build_demo_worker
from tests.pipeline.harness import Harness, running_plane
from tests.sdk.servers import CordumUp, cordum_up


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the loop the product uses)."""
    return "asyncio"


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Harness]:
    """The demo policy and the demo pack's worker, served over HTTP in the test's loop."""
    text, _ = demo_policy_text()
    async with running_plane(tmp_path, policy_text=text) as harness:
        await harness.plane.add_worker(build_demo_worker())
        yield harness


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CordumUp]:
    """``cordum up`` with the demo pack, in a subprocess shared by the module."""
    with cordum_up(tmp_path_factory.mktemp("cordum-up") / "data") as served:
        yield served
