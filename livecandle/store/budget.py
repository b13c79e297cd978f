"""One exchange IP's budget in Redis, shared by every process of that IP (issue 10).

* ``RedisWeightWindow``: the request weight of Binance's fixed one-minute windows, one
  counter per window (``scripts.BUDGET_TAKE``): a process takes weight only if the
  window's count, as every process has taken it (and as the exchange's header told
  this one), stays within the ceiling it asks for. It is the ``SharedWindow`` of
  ``exchange.binance.weights``; priorities stay each process's own queue.
* ``RedisConnectionAttempts``: websocket connection attempts, a sliding window of
  Redis-time stamps (``scripts.ATTEMPT_TAKE``), the ``ConnectionAttempts`` of
  ``exchange.binance.stream_limits`` (Binance: 300 per 5 minutes per IP).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from livecandle.store import cluster, scripts
from livecandle.store.store import Store

# a window's counter outlives it a little (a late process still finds it)
_WINDOW_TTL_FACTOR = 2


class RedisWeightWindow:
    """The IP's weight per window, in Redis (``weights.SharedWindow``)."""

    def __init__(self, store: Store, name: str = "weight") -> None:
        self.store = store
        self.name = name
        self._take = store.redis.register_script(scripts.BUDGET_TAKE)
        self.token = uuid.uuid4().hex
        self.taken = 0
        self.refused = 0
        self.takers = 1  # processes that asked in the window of the last take

    async def take(
        self,
        window: int,
        window_ms: int,
        weight: int,
        ceiling: int,
        known: int,
        carried: int = 0,
        pause_until_ms: int = 0,
        now_ms: int = 0,
    ) -> tuple[bool, int, int]:
        name = f"{self.name}{window_ms}"
        k = self.store.keys
        keys = [
            k.budget_window(name, window),
            k.budget_pause(name),
            k.budget_takers(name, window),
        ]
        ttl_ms = window_ms * _WINDOW_TTL_FACTOR
        ok, used, paused, takers = await _run(
            self.store,
            self._take,
            keys,
            [weight, ceiling, known, ttl_ms, carried, pause_until_ms, now_ms, self.token],
        )
        self.takers = int(takers)
        if int(ok):
            self.taken += 1
        else:
            self.refused += 1
        return bool(int(ok)), int(used), int(paused)


class RedisConnectionAttempts:
    """At most ``int(limit * safety)`` attempts of every process of the IP in any
    ``window_s`` (``stream_limits.ConnectionAttempts``); a waiter retries when the oldest
    attempt leaves the window."""

    def __init__(
        self,
        store: Store,
        limit: int = 300,
        window_s: float = 300.0,
        safety: float = 0.9,
    ) -> None:
        self.store = store
        self.limit = limit
        self.window_s = window_s
        self.allowed = max(1, int(limit * safety))
        self._take = store.redis.register_script(scripts.ATTEMPT_TAKE)
        self._lock = asyncio.Lock()
        self.attempts = 0
        self.waiting = 0
        self.waits = 0
        self.used = 0  # the IP's attempts in the window, at the last look

    async def take(self) -> None:
        self.waiting += 1
        waited = False
        try:
            async with self._lock:  # first come first served within the process
                while True:
                    wait_ms, used = await _run(
                        self.store,
                        self._take,
                        [self.store.keys.budget_window("connect", 0)],
                        [self.allowed, int(self.window_s * 1000), uuid.uuid4().hex],
                    )
                    self.used = int(used)
                    if not int(wait_ms):
                        self.attempts += 1
                        self.waits += waited
                        return
                    waited = True
                    await asyncio.sleep(int(wait_ms) / 1000)
        finally:
            self.waiting -= 1

    def stats(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "window_s": self.window_s,
            "allowed": self.allowed,
            "used": self.used,
            "waiting": self.waiting,
            "attempts": self.attempts,
            "waits": self.waits,
            "shared": True,
        }


async def _run(store: Store, script: Any, keys: list[str], args: list[Any]) -> Any:
    """``script`` on its key (on a cluster: by SHA on the key's master)."""
    if cluster.is_cluster(store.redis):
        return await cluster.evalsha(store.redis, script, keys, args, [script])  # type: ignore[arg-type]
    return await script(keys=keys, args=args)
