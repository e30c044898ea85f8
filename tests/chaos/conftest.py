"""The chaos suite's cluster: started once for the module, healed before every scenario."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.servers import binary


@pytest.fixture(scope="module")
def cluster() -> Iterator[ChaosCluster]:
    """Private Redis and NATS, a kernel, two schedulers, two gateways and two workers."""
    binary("redis-server")  # skip (fail under CI=true) before anything starts
    binary("nats-server")
    chaos = ChaosCluster()
    try:
        chaos.start()
        yield chaos
    finally:
        chaos.close()


@pytest.fixture
def healed(cluster: ChaosCluster) -> ChaosCluster:
    """The cluster with every process a previous scenario killed started again."""
    cluster.heal()
    return cluster
