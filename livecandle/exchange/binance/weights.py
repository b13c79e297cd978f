"""Request-weight budget shared by every REST call to one exchange host.

Binance counts weight per IP in fixed one-minute windows and reports the running total
in ``X-MBX-USED-WEIGHT-1M``. The budget reserves weight before each request, syncs with
the header after it, and makes every caller wait (not fail) when the window is full, after
a 429 (``Retry-After``) or during a 418 ban.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from livecandle.domain.clock import Clock

log = logging.getLogger(__name__)

_SKEW_MARGIN_MS = 50


class WeightBudget:
    def __init__(
        self,
        clock: Clock,
        limit: int = 6000,
        window_ms: int = 60_000,
        safety: float = 0.97,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self.window_ms = window_ms
        self.safety = safety
        self.limit = limit
        self._sleep = sleep
        self._window = -1
        self.used = 0
        self.blocked_until_ms = 0
        self.block_reason = ""
        self.requests = 0
        self.weight_sent = 0
        self.waits = 0

    @property
    def header(self) -> str:
        """The response header carrying the used weight of this window, lower case
        (``x-mbx-used-weight-1m`` for Binance's one-minute window)."""
        for unit_ms, letter in ((86_400_000, "d"), (3_600_000, "h"), (60_000, "m")):
            if self.window_ms % unit_ms == 0:
                return f"x-mbx-used-weight-{self.window_ms // unit_ms}{letter}"
        return f"x-mbx-used-weight-{max(1, self.window_ms // 1000)}s"

    @property
    def budget(self) -> int:
        return max(1, int(self.limit * self.safety))

    def set_limit(self, limit: int, window_ms: int) -> None:
        if limit != self.limit or window_ms != self.window_ms:
            log.info("weight limit %d per %d ms (from exchangeInfo)", limit, window_ms)
        self.limit, self.window_ms = limit, window_ms
        # same window, new numbering: what was used in it still counts
        self._window = (self.clock.now_ms() - _SKEW_MARGIN_MS) // window_ms

    def _roll(self, now_ms: int) -> None:
        window = (now_ms - _SKEW_MARGIN_MS) // self.window_ms
        if window > self._window:
            self._window = window
            self.used = 0

    async def acquire(self, weight: int) -> None:
        while True:
            now_ms = self.clock.now_ms()
            if now_ms < self.blocked_until_ms:
                self.waits += 1
                await self._sleep((self.blocked_until_ms - now_ms) / 1000)
                continue
            self._roll(now_ms)
            if self.used + weight <= self.budget or self.used == 0:
                self.used += weight
                self.requests += 1
                self.weight_sent += weight
                return
            self.waits += 1
            next_window_ms = (self._window + 1) * self.window_ms + _SKEW_MARGIN_MS
            await self._sleep(max(1, next_window_ms - now_ms) / 1000)

    def observe(self, used_in_window: int) -> None:
        """The exchange's count for the current window (from the response header)."""
        self._roll(self.clock.now_ms())
        if used_in_window > self.used:
            self.used = used_in_window

    def block(self, wait_s: float, reason: str) -> None:
        """Pause every request for ``wait_s`` (a 429's or 418's ``Retry-After``)."""
        until_ms = self.clock.now_ms() + int(wait_s * 1000)
        if until_ms > self.blocked_until_ms:
            self.blocked_until_ms = until_ms
            self.block_reason = reason
            log.warning("all REST requests paused for %.0f s: %s", wait_s, reason)
