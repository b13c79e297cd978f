"""Symbols wanted on demand (issue 11: any symbol on demand), kept in Redis so that a
web process tells the follower processes (fetcher, stream) which symbols clients ask
for: ``universe_wanted`` (a ZSET scored by the last time a client asked) and
``universe_demand`` (those admitted, at most the cap). Every change is one atomic script
on the two keys (one cluster slot): processes following the universe apart agree on
what is admitted, and the cap holds whoever asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from livecandle.domain.universe import Demand
from livecandle.store import cluster
from livecandle.store.store import Store

WANTED_MAX: Final = 10_000  # symbols wanted at once, at most (admitted ones never trimmed)

WANT: Final = r"""
-- KEYS[1] universe_wanted   KEYS[2] universe_demand
-- ARGV[1] now_ms   ARGV[2] most symbols kept wanted   ARGV[3..] symbols asked for now
local wanted, demand = KEYS[1], KEYS[2]
local bound = tonumber(ARGV[2])
for i = 3, #ARGV do redis.call('ZADD', wanted, ARGV[1], ARGV[i]) end
local excess = redis.call('ZCARD', wanted) - bound
if excess > 0 then -- the least recently asked go first, never an admitted one
  local oldest = redis.call('ZRANGE', wanted, 0, excess + redis.call('HLEN', demand))
  for _, s in ipairs(oldest) do
    if excess <= 0 then break end
    if redis.call('HEXISTS', demand, s) == 0 then
      redis.call('ZREM', wanted, s)
      excess = excess - 1
    end
  end
end
return 0
"""

ADMIT: Final = r"""
-- Forget wishes older than the idle time, drop admitted symbols no longer wanted,
-- admit the most recently wanted ones up to the cap.
-- KEYS[1] universe_wanted   KEYS[2] universe_demand
-- ARGV[1] now_ms   ARGV[2] idle_ms   ARGV[3] cap
-- Returns {symbol, "<since_ms> <warm_ms>", asked_ms, ...} of the admitted symbols.
local wanted, demand = KEYS[1], KEYS[2]
local now, idle, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', wanted, '-inf', '(' .. (now - idle))
local n = 0
local admitted = redis.call('HKEYS', demand)
for _, s in ipairs(admitted) do
  if redis.call('ZSCORE', wanted, s) then n = n + 1 else redis.call('HDEL', demand, s) end
end
if n > cap then -- the cap was lowered: the least recently asked go
  local asked = redis.call('ZRANGE', wanted, 0, -1)
  for _, s in ipairs(asked) do
    if n <= cap then break end
    n = n - redis.call('HDEL', demand, s)
  end
end
if n < cap then
  local asked = redis.call('ZREVRANGE', wanted, 0, -1)
  for _, s in ipairs(asked) do
    if n >= cap then break end
    n = n + redis.call('HSETNX', demand, s, ARGV[1] .. ' 0')
  end
end
local out = {}
local all = redis.call('HGETALL', demand)
for i = 1, #all, 2 do
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
  out[#out + 1] = redis.call('ZSCORE', wanted, all[i])
end
return out
"""

RELEASE: Final = r"""
-- Symbols that need no demand (selected anyway, not TRADING): neither wanted nor admitted.
-- KEYS[1] universe_wanted   KEYS[2] universe_demand   ARGV symbols
for _, s in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], s)
  redis.call('HDEL', KEYS[2], s)
end
return 0
"""

WARM: Final = r"""
-- Admitted symbols whose history is stored now. KEYS[1] universe_demand
-- ARGV[1] now_ms   ARGV[2..] symbols
local n = 0
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local since, warm = string.match(v, '^(%d+) (%d+)$')
    if since and warm == '0' then
      redis.call('HSET', KEYS[1], ARGV[i], since .. ' ' .. ARGV[1])
      n = n + 1
    end
  end
end
return n
"""


class DemandStore:
    """The wanted and admitted symbols of one Redis (or cluster)."""

    def __init__(self, store: Store) -> None:
        self.redis = store.redis
        self.keys = store.keys
        self._cluster = cluster.is_cluster(store.redis)
        r = store.redis
        self._want = r.register_script(WANT)
        self._admit = r.register_script(ADMIT)
        self._release = r.register_script(RELEASE)
        self._warm = r.register_script(WARM)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self._cluster:
            scripts = [self._want, self._admit, self._release, self._warm]
            return await cluster.evalsha(self.redis, script, keys, args, scripts)  # type: ignore[arg-type]
        return await script(keys=keys, args=args)

    @property
    def _both(self) -> list[str]:
        return [self.keys.universe_wanted, self.keys.universe_demand]

    async def want(self, symbols: Sequence[str], now_ms: int, bound: int = WANTED_MAX) -> None:
        """Clients asked for ``symbols`` now."""
        if symbols:
            await self._run(self._want, self._both, [now_ms, bound, *symbols])

    async def admit(self, now_ms: int, idle_ms: int, cap: int) -> dict[str, Demand]:
        """The admitted symbols after forgetting the idle and admitting up to ``cap``."""
        raw = await self._run(self._admit, self._both, [now_ms, idle_ms, max(cap, 0)])
        out: dict[str, Demand] = {}
        for i in range(0, len(raw) - 2, 3):
            name = raw[i].decode() if isinstance(raw[i], bytes) else str(raw[i])
            since, warm = (int(x) for x in _text(raw[i + 1]).split())
            asked = int(float(_text(raw[i + 2]))) if raw[i + 2] is not None else now_ms
            out[name] = Demand(since, asked, warm)
        return out

    async def release(self, symbols: Sequence[str]) -> None:
        if symbols:
            await self._run(self._release, self._both, list(symbols))

    async def mark_warm(self, symbols: Sequence[str], now_ms: int) -> int:
        """``symbols`` (admitted) have their history stored: answered locally from now."""
        if not symbols:
            return 0
        return int(await self._run(self._warm, [self.keys.universe_demand], [now_ms, *symbols]))

    async def wanted(self) -> dict[str, int]:
        """Every wanted symbol and when it was last asked for (tests, diagnostics)."""
        raw = await self.redis.zrange(self.keys.universe_wanted, 0, -1, withscores=True)
        return {_text(s): int(score) for s, score in raw}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
