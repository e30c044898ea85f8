"""A circuit breaker state shared by every replica, in Redis.

One hash per breaker name holds the state, the consecutive failures, when the state was
entered, the probes taken and the probe successes. Every operation is one Lua script, so
a move (read the state, apply the rule, write it back) is atomic across processes and
costs one round trip; ``allow`` on a closed breaker (the hot path) writes nothing.

Time is Redis's own clock (``TIME``), never a replica's: replicas whose clocks disagree
still agree on when the open period is over.

Two choices differ from a single process's breaker, both because replicas can die:

- A half-open round whose probes were all taken but never reported (their replica
  crashed mid-call) would refuse every call forever; after ``open_seconds`` without an
  outcome a new round starts with a fresh probe budget.
- When Redis itself fails, the breaker steps aside: ``allow`` answers True and outcomes
  are not recorded, so each call goes to the kernel and the fail mode decides it. A
  breaker that raised would turn every gate call into an error, which is worse than the
  breaker's absence. The failure is logged once, and its end once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis

from cordum.ports.breaker import BreakerLimits, BreakerState
from cordum.ports.redis_velocity import DEFAULT_TIMEOUT_S, sync_client

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "cordum:breaker"
DEFAULT_IDLE_TTL_S = 3600.0
DEFAULT_TRUST_CLOSED_S = 0.25

# KEYS[1]: the breaker's hash. ARGV: operation (state | allow | success | failure),
# failure threshold, open period (ms), probe budget, successes to close, idle TTL (ms).
# Returns {allowed (0|1), state}.
_SCRIPT = """
local key = KEYS[1]
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local open_ms = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local close_after = tonumber(ARGV[5])
local ttl_ms = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', key, 'state', 'failures', 'since', 'probes', 'successes')
local state = v[1] or 'closed'
local failures = tonumber(v[2]) or 0
local since = tonumber(v[3]) or 0
local probes = tonumber(v[4]) or 0
local successes = tonumber(v[5]) or 0
local changed = false

local function open()
  state = 'open'
  since = now
  failures = 0
  changed = true
end

if now - since >= open_ms and (state == 'open' or (state == 'half_open' and probes >= budget)) then
  state = 'half_open'
  since = now
  probes = 0
  successes = 0
  changed = true
end

local allowed = 0
if op == 'allow' then
  if state == 'closed' then
    allowed = 1
  elseif state == 'half_open' and probes < budget then
    probes = probes + 1
    changed = true
    allowed = 1
  end
elseif op == 'success' then
  if state == 'half_open' then
    successes = successes + 1
    if successes >= close_after then
      state = 'closed'
      failures = 0
    end
    changed = true
  elseif failures > 0 then
    failures = 0
    changed = true
  end
elseif op == 'failure' then
  if state == 'half_open' then
    open()
  else
    failures = failures + 1
    changed = true
    if failures >= threshold then
      open()
    end
  end
end

if changed then
  if state == 'closed' and failures == 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'state', state, 'failures', failures, 'since', since,
      'probes', probes, 'successes', successes)
    redis.call('PEXPIRE', key, math.max(ttl_ms, 2 * open_ms))
  end
end
return {allowed, state}
"""


class RedisBreakerBackend:
    """A breaker's state in Redis, shared by every breaker object with the same name."""

    def __init__(
        self,
        client: redis.Redis | str,
        name: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        idle_ttl_seconds: float = DEFAULT_IDLE_TTL_S,
        timeout: float = DEFAULT_TIMEOUT_S,
        trust_closed_s: float = DEFAULT_TRUST_CLOSED_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` is a sync Redis client or a ``redis://`` URL (then ``timeout`` bounds
        each call, without retries).

        ``name`` says what is guarded (e.g. ``kernel``): replicas that give the same name
        share one breaker. A breaker left alone for ``idle_ttl_seconds`` (at least twice
        the open period) is forgotten, which is the same as closed.

        ``trust_closed_s``: after Redis said "closed", that answer is trusted this long
        without asking again, as long as this process sees no failure. The breaker sits
        in every gate call; asking Redis twice per call (allow, then success) blocked the
        event loop for a round trip each, which cost more than the kernel call itself.
        Another replica opening the breaker is noticed here within this delay.
        """
        self.redis = sync_client(client, timeout)
        self.key = f"{prefix}:{name}"
        self.idle_ttl_ms = math.ceil(idle_ttl_seconds * 1000)
        self.trust_closed_s = trust_closed_s
        self._clock = clock
        self._script = self.redis.register_script(_SCRIPT)
        self._degraded = False
        self._closed_until = 0.0
        self._failed_since_closed = False

    def state(self, limits: BreakerLimits) -> BreakerState:
        """See :meth:`BreakerBackend.state`."""
        return self._run("state", limits)[1]

    def allow(self, limits: BreakerLimits) -> bool:
        """See :meth:`BreakerBackend.allow` (no round trip while "closed" is trusted)."""
        if self._trusted_closed():
            return True
        allowed, state = self._run("allow", limits)
        self._remember(state)
        return allowed

    def record_success(self, limits: BreakerLimits) -> None:
        """See :meth:`BreakerBackend.record_success` (nothing to tell a closed breaker
        that has seen no failure from this process)."""
        if self._trusted_closed() and not self._failed_since_closed:
            return
        _, state = self._run("success", limits)
        self._failed_since_closed = False
        self._remember(state)

    def record_failure(self, limits: BreakerLimits) -> None:
        """See :meth:`BreakerBackend.record_failure` (always shared at once)."""
        self._closed_until = 0.0
        self._failed_since_closed = True
        self._run("failure", limits)

    def _trusted_closed(self) -> bool:
        return self._clock() < self._closed_until

    def _remember(self, state: BreakerState) -> None:
        trusted = state is BreakerState.CLOSED and not self._degraded
        self._closed_until = self._clock() + self.trust_closed_s if trusted else 0.0

    def _run(self, op: str, limits: BreakerLimits) -> tuple[bool, BreakerState]:
        args = (
            op,
            limits.failure_threshold,
            math.ceil(limits.open_seconds * 1000),
            limits.half_open_probes,
            limits.close_after_successes,
            self.idle_ttl_ms,
        )
        try:
            allowed, state = self._script(keys=[self.key], args=args)
        except redis.RedisError as exc:
            if not self._degraded:
                log.warning(
                    "circuit breaker %s: Redis failed (%s); calls pass unguarded until it"
                    " answers again, and the fail mode decides each failed call",
                    self.key,
                    exc,
                )
                self._degraded = True
            return True, BreakerState.CLOSED
        if self._degraded:
            log.warning("circuit breaker %s: Redis answers again", self.key)
            self._degraded = False
        return bool(allowed), BreakerState(state.decode() if isinstance(state, bytes) else state)
