"""Fixtures for the distributed-mode tests (real Redis and NATS, see tests/backing.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
