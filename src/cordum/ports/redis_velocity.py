"""Velocity counters shared by every replica, in Redis.

Each bucket is a sorted set of arrival times (members unique per arrival, scores in
microseconds of Redis's own clock, so replicas whose clocks disagree still share one
window). One Lua script records an arrival, drops what left the window, keeps the newest
``limit + 1`` arrivals (all that "more than ``limit``?" needs, as in the in-memory store)
and counts: one round trip, atomic across processes. A bucket's key expires one window
after its last arrival.

The client is synchronous because the policy core is: evaluation is a plain function
call. Its socket timeouts are short, as the call blocks the event loop while it waits.

When Redis fails, :class:`VelocityStoreError` is raised rather than a guess: counting
nothing would let a flood through and counting everything would throttle everyone. The
kernel call then fails, and the gate's fail mode decides (closed by default: no job
passes unchecked), the failure feeding the circuit breaker like any kernel failure.
"""

from __future__ import annotations

import secrets

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cordum.policy.velocity import VelocityCount

DEFAULT_PREFIX = "cordum:velocity"
DEFAULT_TIMEOUT_S = 0.5

# KEYS[1]: the bucket. ARGV: limit, window (microseconds), record (1|0), member.
# Returns {count, retry_after (microseconds, -1 when not exceeded)}.
_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cutoff = now - window
local count
local second
if ARGV[3] == '1' then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 2))
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1)
  count = redis.call('ZCARD', key)
  if count > limit then
    second = tonumber(redis.call('ZRANGE', key, 1, 1, 'WITHSCORES')[2])
  end
else
  local stored = redis.call('ZRANGEBYSCORE', key, '(' .. cutoff, '+inf', 'WITHSCORES')
  local times = {}
  for i = 2, #stored, 2 do
    times[#times + 1] = tonumber(stored[i])
  end
  times[#times + 1] = now
  local first = math.max(1, #times - limit)
  count = #times - first + 1
  if count > limit then
    second = times[first + 1]
  end
end
if second == nil then
  return {count, -1}
end
return {count, math.max(0, math.floor(second + window - now))}
"""


class VelocityStoreError(RuntimeError):
    """The shared velocity counters could not be read or written."""


def sync_client(client: redis.Redis | str, timeout: float) -> redis.Redis:
    """``client`` itself, or a client for a ``redis://`` URL that fails fast.

    The URL's client waits at most ``timeout`` seconds for a connection or an answer and
    never retries: these calls sit on the gate's path, where a slow answer is worse than
    an error the fail mode can act on.
    """
    if not isinstance(client, str):
        return client
    return redis.Redis.from_url(
        client,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class RedisVelocityStore:
    """Sliding-window arrival counters in Redis (a :class:`~cordum.policy.VelocityStore`)."""

    def __init__(
        self,
        client: redis.Redis | str,
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """``client`` is a sync Redis client or a ``redis://`` URL (see :func:`sync_client`);
        bucket ``b`` lives at key ``<prefix>:b``."""
        self.redis = sync_client(client, timeout)
        self.prefix = prefix
        self._script = self.redis.register_script(_SCRIPT)

    def hit(self, bucket: str, limit: int, window_seconds: float) -> VelocityCount:
        """Record one arrival and count the window (one atomic round trip)."""
        return self._count(bucket, limit, window_seconds, record=True)

    def peek(self, bucket: str, limit: int, window_seconds: float) -> VelocityCount:
        """Count as if one more job arrived now, without recording it."""
        return self._count(bucket, limit, window_seconds, record=False)

    def _count(
        self, bucket: str, limit: int, window_seconds: float, *, record: bool
    ) -> VelocityCount:
        window_us = max(1, round(window_seconds * 1_000_000))
        args = (limit, window_us, "1" if record else "0", secrets.token_hex(8))
        try:
            count, retry_us = self._script(keys=[f"{self.prefix}:{bucket}"], args=args)
        except redis.RedisError as exc:
            raise VelocityStoreError(f"velocity counters unavailable (Redis: {exc})") from exc
        if retry_us < 0:
            return VelocityCount(count=int(count), exceeded=False)
        return VelocityCount(
            count=int(count), exceeded=True, retry_after_seconds=int(retry_us) / 1_000_000
        )
