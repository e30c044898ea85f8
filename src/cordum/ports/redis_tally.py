"""The Redis store's per-minute tally of decisions (for dashboards' charts).

A mixin of :class:`~cordum.ports.redis_store.RedisStore`. Each minute has one hash
(:meth:`~cordum.ports.redis_keys.Keys.tally`) whose fields are ``<decision>|<0|1>|<tenant>``,
the 1 for fail-open: the write that records a decision adds one to its field in the same
commit (:func:`count_decision`), so the tally cannot disagree with the decisions. The
hash expires :data:`TALLY_KEPT_S` after its minute starts, so the tally needs no cleanup.

Reading sums the fields on the server (:data:`TALLY_SCRIPT`): an hour is one call that
answers a few numbers per minute, whatever the number of tenants, instead of every field
of sixty hashes to parse here.
"""

from __future__ import annotations

import time
from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from cordum.models.decision import Decision
from cordum.models.pipeline import DecisionEntry
from cordum.ports.redis_commit import Tx, text
from cordum.ports.redis_keys import Keys
from cordum.ports.store import TALLY_RETENTION_S, DecisionCount, decision_minute, tally_minutes

TALLY_KEPT_S: Final = TALLY_RETENTION_S + 3600
"""How long after its start a minute's tally is kept: the retention, and an hour for
writers whose clocks disagree with Redis's (which deletes the hash by its own clock)."""

TALLY_SCRIPT: Final = """#!lua flags=no-writes
-- KEYS: the tally hashes of the minutes asked for. ARGV[1]: '*' for every tenant, else
-- '=' and ARGV[2..]: the tenants to count. Per key, a flat list of "<decision>|<0|1>"
-- and its count, summed over those tenants.
local every = ARGV[1] == '*'
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local minutes = {}
for k, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  local sums, kinds = {}, {}
  for i = 1, #fields, 2 do
    local field = fields[i]
    local cut = string.find(field, '|', string.find(field, '|', 1, true) + 1, true)
    if every or wanted[string.sub(field, cut + 1)] then
      local kind = string.sub(field, 1, cut - 1)
      if not sums[kind] then
        sums[kind] = 0
        kinds[#kinds + 1] = kind
      end
      sums[kind] = sums[kind] + tonumber(fields[i + 1])
    end
  end
  local minute = {}
  for _, kind in ipairs(kinds) do
    minute[#minute + 1] = kind
    minute[#minute + 1] = sums[kind]
  end
  minutes[k] = minute
end
return minutes
"""


def count_decision(tx: Tx, keys: Keys, tenant_id: str, decision: DecisionEntry) -> None:
    """Add ``decision`` (of a job of ``tenant_id``) to its minute's tally, in ``tx``."""
    minute = decision_minute(decision.at)
    tally = keys.tally(minute)
    fail_open = int(decision.safety_bypassed)
    tx.call("HINCRBY", tally, f"{decision.decision.value}|{fail_open}|{tenant_id}", 1)
    # A string: a number would reach Redis as a Lua double, formatted as its version does.
    tx.call("EXPIREAT", tally, str(minute + TALLY_KEPT_S))


class DecisionTally:
    """``decision_counts`` on Redis."""

    _keys: Keys
    _tally: AsyncScript
    """:data:`TALLY_SCRIPT`, registered on the store's client."""

    async def _ready(self) -> Redis:
        raise NotImplementedError  # provided by RedisStore

    async def decision_counts(
        self, since: float, *, tenant_ids: frozenset[str] | None = None
    ) -> list[DecisionCount]:
        """See :meth:`cordum.ports.store.Store.decision_counts`."""
        await self._ready()
        minutes = tally_minutes(since, time.time())
        if not minutes or (tenant_ids is not None and not tenant_ids):
            return []
        tenants = ["*"] if tenant_ids is None else ["=", *sorted(tenant_ids)]
        keys = [self._keys.tally(minute) for minute in minutes]
        replies = await self._tally(keys=keys, args=tenants)
        counts: list[DecisionCount] = []
        for minute, flat in zip(minutes, replies, strict=True):
            kinds = sorted(
                (text(kind).partition("|"), int(count))
                for kind, count in zip(flat[::2], flat[1::2], strict=True)
            )
            counts.extend(
                DecisionCount(
                    minute=minute, decision=Decision(decision), fail_open=fail_open == "1", count=n
                )
                for (decision, _, fail_open), n in kinds
            )
        return counts
