"""A circuit breaker for calls to the Safety Kernel (reference section 4).

Closed: calls pass; 3 consecutive failures open it. Open: calls are refused without
trying for 30 s. Half-open: at most 3 probes are let through; 2 successes close it, any
failure opens it again. Refusing fast while the kernel is down keeps gate latency flat
and lets the fail mode decide at once.

The state lives in a :class:`~cordum.ports.breaker.BreakerBackend`: in this process by
default, or shared by every replica (Redis), so one replica's failures stop them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cordum.ports.breaker import BreakerBackend, BreakerLimits, BreakerState

__all__ = ["BreakerState", "CircuitBreaker", "InMemoryBreakerBackend"]


class InMemoryBreakerBackend:
    """One process's breaker state (embedded mode, a single replica, tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._successes = 0

    def state(self, limits: BreakerLimits) -> BreakerState:
        """See :meth:`BreakerBackend.state`."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= limits.open_seconds
        ):
            self._state = BreakerState.HALF_OPEN
            self._probes = 0
            self._successes = 0
        return self._state

    def allow(self, limits: BreakerLimits) -> bool:
        """See :meth:`BreakerBackend.allow`."""
        state = self.state(limits)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < limits.half_open_probes:
            self._probes += 1
            return True
        return False

    def record_success(self, limits: BreakerLimits) -> None:
        """See :meth:`BreakerBackend.record_success`."""
        if self.state(limits) is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= limits.close_after_successes:
                self._state = BreakerState.CLOSED
                self._failures = 0
            return
        self._failures = 0

    def record_failure(self, limits: BreakerLimits) -> None:
        """See :meth:`BreakerBackend.record_failure`."""
        if self.state(limits) is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= limits.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0


class CircuitBreaker:
    """Counts failures of one dependency and refuses calls while it is considered down."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        open_seconds: float = 30.0,
        half_open_probes: int = 3,
        close_after_successes: int = 2,
        clock: Callable[[], float] = time.monotonic,
        backend: BreakerBackend | None = None,
    ) -> None:
        """``clock`` drives the default in-memory state; ``backend`` replaces it (shared)."""
        self.limits = BreakerLimits(
            failure_threshold=failure_threshold,
            open_seconds=open_seconds,
            half_open_probes=half_open_probes,
            close_after_successes=close_after_successes,
        )
        self.backend: BreakerBackend = InMemoryBreakerBackend(clock) if backend is None else backend

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker turns half-open once its time is up)."""
        return self.backend.state(self.limits)

    def allow(self) -> bool:
        """Whether a call may be attempted now (counts a probe when half-open)."""
        return self.backend.allow(self.limits)

    def record_success(self) -> None:
        """A call succeeded."""
        self.backend.record_success(self.limits)

    def record_failure(self) -> None:
        """A call failed or timed out."""
        self.backend.record_failure(self.limits)
