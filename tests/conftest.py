"""Fixtures for the whole suite."""

from __future__ import annotations

import pytest

from tests.pipeline.harness import ADMIN_KEY


@pytest.fixture(autouse=True)
def _admin_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CORDUM_API_KEY`` is the test planes' admin key, as after ``export CORDUM_API_KEY``.

    SDK clients and workers read it when no key is given, and subprocesses inherit it.
    """
    monkeypatch.setenv("CORDUM_API_KEY", ADMIN_KEY)
