"""The circuit breaker's state port: where a breaker's state lives and how it moves.

The breaker's rules (reference section 4) are the same everywhere; what differs is who
sees the state. One process keeps it in memory
(:class:`~cordum.services.breaker.InMemoryBreakerBackend`); replicas share it through
Redis (:class:`~cordum.ports.redis_breaker.RedisBreakerBackend`), so that when one
replica's calls open the breaker the others stop calling too, and the half-open probe
budget is global. A backend applies each move atomically: the state, the counters and
the transition are one operation, never a read followed by a write.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class BreakerState(StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerLimits:
    """The thresholds a breaker moves by (each configurable, reference section 4)."""

    failure_threshold: int = 3
    """Consecutive failures that open a closed breaker."""
    open_seconds: float = 30.0
    """How long an open breaker refuses calls before it lets probes through."""
    half_open_probes: int = 3
    """Calls a half-open breaker lets through at most."""
    close_after_successes: int = 2
    """Successful probes that close a half-open breaker."""


class BreakerBackend(Protocol):
    """One breaker's state, moved atomically by the four breaker operations.

    Synchronous because the breaker is asked on every gate call and must stay cheap: an
    in-memory backend costs nothing, a shared one one round trip per operation.
    """

    def state(self, limits: BreakerLimits) -> BreakerState:
        """The current state (an open breaker turns half-open once its time is up)."""
        ...

    def allow(self, limits: BreakerLimits) -> bool:
        """Whether a call may be attempted now (takes a probe when half-open)."""
        ...

    def record_success(self, limits: BreakerLimits) -> None:
        """A call succeeded."""
        ...

    def record_failure(self, limits: BreakerLimits) -> None:
        """A call failed or timed out."""
        ...
