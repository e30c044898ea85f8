"""Velocity counters: how many jobs with the same key arrived in a sliding window.

The kernel talks to counters through :class:`VelocityStore`, so the embedded store here
and a shared (Redis) store for replicas are interchangeable. A bucket only needs the
newest ``limit + 1`` arrival times to answer "more than ``limit`` in the window?", which
bounds its memory no matter how hard an agent hammers it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

_SWEEP_EVERY = 10_000


@dataclass(frozen=True)
class VelocityCount:
    """Arrivals in the window (this one included, capped at limit + 1) and the verdict."""

    count: int
    exceeded: bool
    retry_after_seconds: float | None = None


class VelocityStore(Protocol):
    """Sliding-window arrival counters, keyed by bucket."""

    def hit(self, bucket: str, limit: int, window_seconds: float) -> VelocityCount:
        """Record one arrival in ``bucket`` and count the window, this arrival included."""
        ...

    def peek(self, bucket: str, limit: int, window_seconds: float) -> VelocityCount:
        """What :meth:`hit` would answer, without recording anything (for simulate)."""
        ...


class InMemoryVelocityStore:
    """Counters for one process (embedded mode, tests, the CLI)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, deque[float]]] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def hit(self, bucket: str, limit: int, window_seconds: float) -> VelocityCount:
        """Record one arrival and count the window."""
        with self._lock:
            now = self._clock()
            arrivals = self._arrivals(bucket, limit, window_seconds)
            _expire(arrivals, now - window_seconds)
            arrivals.append(now)
            self._hits += 1
            if self._hits % _SWEEP_EVERY == 0:
                self._sweep(now)
            return _verdict(arrivals, limit, window_seconds, now)

    def peek(self, bucket: str, limit: int, window_seconds: float) -> VelocityCount:
        """Count as if one more job arrived now, without recording it."""
        with self._lock:
            now = self._clock()
            cutoff = now - window_seconds
            stored = self._buckets.get(bucket)
            recent = [t for t in stored[1] if t > cutoff] if stored else []
            recent.append(now)
            window = deque(recent[-(limit + 1) :], maxlen=limit + 1)
            return _verdict(window, limit, window_seconds, now)

    def _arrivals(self, bucket: str, limit: int, window_seconds: float) -> deque[float]:
        stored = self._buckets.get(bucket)
        if stored is not None and stored[1].maxlen == limit + 1:
            if stored[0] != window_seconds:
                self._buckets[bucket] = (window_seconds, stored[1])
            return stored[1]
        # A new bucket, or the rule's limit changed with a new policy: keep what we know.
        arrivals: deque[float] = deque(stored[1] if stored else (), maxlen=limit + 1)
        self._buckets[bucket] = (window_seconds, arrivals)
        return arrivals

    def _sweep(self, now: float) -> None:
        stale = [
            key
            for key, (window, arrivals) in self._buckets.items()
            if not arrivals or arrivals[-1] <= now - window
        ]
        for key in stale:
            del self._buckets[key]


def _expire(arrivals: deque[float], cutoff: float) -> None:
    while arrivals and arrivals[0] <= cutoff:
        arrivals.popleft()


def _verdict(
    arrivals: deque[float], limit: int, window_seconds: float, now: float
) -> VelocityCount:
    count = len(arrivals)
    if count <= limit:
        return VelocityCount(count=count, exceeded=False)
    # This arrival counts too, so a retry passes once only `limit - 1` of the kept
    # arrivals remain in the window: when the second oldest one expires.
    return VelocityCount(
        count=count,
        exceeded=True,
        retry_after_seconds=max(0.0, arrivals[1] + window_seconds - now),
    )
