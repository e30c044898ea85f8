"""Leases in Redis: one key per lease, holding the owner's token, with a time to live.

Taking and renewing are one Lua script each, so two replicas can never both believe
they hold a lease: a replica renews only while the key still holds its own token.
"""

from __future__ import annotations

import logging
import secrets

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_TAKE_OR_RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if owner then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """A lease named ``name`` under ``prefix``; held for ``ttl_s`` after each renewal."""

    def __init__(
        self, client: aioredis.Redis, name: str, *, ttl_s: float, prefix: str = "cordum:"
    ) -> None:
        self.name = name
        self.key = f"{prefix}lease:{name}"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = secrets.token_hex(16)
        self._client = client

    async def held(self) -> bool:
        """Take or renew; False (never an exception) when Redis cannot be reached, since
        a replica that cannot renew must assume another one took over."""
        try:
            taken = await self._client.eval(_TAKE_OR_RENEW, 1, self.key, self.token, self.ttl_ms)
        except RedisError as exc:
            log.warning("lease %s: cannot reach Redis (%s); not acting this round", self.name, exc)
            return False
        return bool(taken)

    async def release(self) -> None:
        """Delete the lease if this process holds it."""
        try:
            await self._client.eval(_RELEASE, 1, self.key, self.token)
        except RedisError as exc:
            log.warning("lease %s: could not release it: %s", self.name, exc)
