"""Redis clients whose calls queue for a connection instead of failing.

redis-py's default pool refuses a call past its 100th connection at once ("too many
connections"); a burst of dispatches or requests must wait its turn instead.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

MAX_CONNECTIONS = 64
POOL_TIMEOUT_S = 20.0


def pooled_client(
    url: str, *, max_connections: int = MAX_CONNECTIONS, pool_timeout: float = POOL_TIMEOUT_S
) -> Redis:
    """A client of ``url`` with at most ``max_connections``; a call past them waits up to
    ``pool_timeout`` seconds for one.

    No transparent retries: a command resent after its reply was lost could apply twice.
    A connection error reaches the caller, who knows the command may have landed.
    """
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, retry=Retry(NoBackoff(), 0)
    )
    return Redis.from_pool(pool)
