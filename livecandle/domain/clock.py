"""Clocks, injected wherever time matters so that tests drive time instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ServerClock:
    """The exchange's clock, estimated from ``/api/v3/time`` round trips.

    ``offset_ms`` is server time minus local time at the middle of a round trip: the
    newest one no longer than twice the shortest seen (plus ``RTT_SLACK_MS``), so the
    estimate stays within about a round trip and still follows a host clock that
    drifts or steps (NTP, a resumed VM): the shortest alone would never be beaten. It
    makes a shifted emulator clock and a skewed host both work.
    """

    RTT_SLACK_MS = 5

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms
        self._best_rtt_ms: int | None = None

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def observe(self, sent_local_ms: int, received_local_ms: int, server_ms: int) -> None:
        rtt = max(0, received_local_ms - sent_local_ms)
        best = self._best_rtt_ms
        if best is None or rtt <= 2 * best + self.RTT_SLACK_MS:
            self._best_rtt_ms = rtt if best is None else min(best, rtt)
            self.offset_ms = server_ms - (sent_local_ms + received_local_ms) // 2


class ManualClock:
    """A clock that moves only when told to (tests, replays)."""

    def __init__(self, now_ms: int = 0) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms
