"""Leases: work that must run in one replica at a time (the reconciler, timers).

Every scheduler replica runs the same loops; before each round a loop asks its lease
whether this process holds it. The holder renews it every round; when the holder dies,
its lease runs out (``ttl``) and another replica takes over, so a crash delays the
reconciler by at most one ``ttl``, never stops it. Embedded mode has one process: its
lease is always held.
"""

from __future__ import annotations

from typing import Protocol


class Lease(Protocol):
    """A named lease shared by the replicas."""

    name: str

    async def held(self) -> bool:
        """Take or renew the lease; True while this process holds it."""
        ...

    async def release(self) -> None:
        """Give it up now (on a clean stop), so another replica need not wait out the ttl."""
        ...


class SoleProcess:
    """The lease of a process with no peers: always held."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def held(self) -> bool:
        """Always True."""
        return True

    async def release(self) -> None:
        """Nothing to give up."""
