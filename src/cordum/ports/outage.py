"""Telling an outage of a backing service from a bug.

Redis or NATS being unreachable (or restarting) is not Cordum's bug and not the caller's
mistake: the API answers 503 with ``Retry-After`` so clients retry, and nothing was
changed (every store write is all or nothing). Each adapter's client library raises its
own exception types; this module is the one place that knows them.
"""

from __future__ import annotations

import redis.exceptions
from nats import errors as nats_errors

from cordum.ports.redis_commit import StoreContentionError

_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    nats_errors.ConnectionClosedError,
    nats_errors.NoServersError,
    nats_errors.TimeoutError,
    nats_errors.OutboundBufferLimitError,
    StoreContentionError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means a backing service could not serve the call right now."""
    return isinstance(exc, _OUTAGES)
