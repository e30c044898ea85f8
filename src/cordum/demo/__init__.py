"""The demo pack: a policy and in-process workers for ``cordum up`` and ``cordum demo``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["demo_policy_text"]


def demo_policy_text() -> tuple[str, Path]:
    """The demo policy's YAML and a display path for error messages."""
    source = resources.files(__package__).joinpath("policy.yaml")
    return source.read_text(encoding="utf-8"), Path("cordum/demo/policy.yaml")
