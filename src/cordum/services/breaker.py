"""A circuit breaker for calls to the Safety Kernel (reference section 4).

Closed: calls pass; 3 consecutive failures open it. Open: calls are refused without
trying for 30 s. Half-open: at most 3 probes are let through; 2 successes close it, any
failure opens it again. Refusing fast while the kernel is down keeps gate latency flat
and lets the fail mode decide at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


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
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.half_open_probes = half_open_probes
        self.close_after_successes = close_after_successes
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._successes = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker turns half-open once its time is up)."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.open_seconds
        ):
            self._state = BreakerState.HALF_OPEN
            self._probes = 0
            self._successes = 0
        return self._state

    def allow(self) -> bool:
        """Whether a call may be attempted now (counts a probe when half-open)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < self.half_open_probes:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded."""
        if self.state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.close_after_successes:
                self._state = BreakerState.CLOSED
                self._failures = 0
            return
        self._failures = 0

    def record_failure(self) -> None:
        """A call failed or timed out."""
        if self.state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
