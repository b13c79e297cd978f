"""What the emulator's own work costs: its event loop's lag and each REST request's time.

A test bed that stalls measures itself, not the service it feeds. ``LoopLag`` is a task
that asks to wake every ``period_s`` and counts how late it woke (a histogram in whole
milliseconds since start: a reader takes the difference of two readings for a window).
``RestCost`` adds up the CPU time each REST answer took to compute, by endpoint (CPU,
not wall time: on a shared machine the process also waits for a core).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

MAX_LAG_MS = 60_000  # one bucket for anything later


class LoopLag:
    """Lateness of a periodic wake-up: how long the loop was busy with something else."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.hist: dict[int, int] = {}
        self.max_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="emulator-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        hist = self.hist
        while True:
            due = loop.time() + self.period_s
            await asyncio.sleep(self.period_s)
            late_ms = (loop.time() - due) * 1000
            self.max_ms = max(self.max_ms, late_ms)
            bucket = min(MAX_LAG_MS, max(0, int(late_ms)))
            hist[bucket] = hist.get(bucket, 0) + 1

    def stats(self) -> dict[str, Any]:
        return {
            "period_ms": self.period_s * 1000,
            "max_ms": round(self.max_ms, 1),
            "hist_ms": {str(k): v for k, v in sorted(self.hist.items())},
        }


class GcPauses:
    """Python's garbage collections: how many per generation and the longest pause."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.total_s = 0.0
        self._started = 0.0

    def start(self, young_threshold: int = 50_000) -> None:
        """Count collections; collect the young generation every ``young_threshold``
        allocations, not Python's 700: the market allocates a tuple or two per trade,
        and each collection of the young generation stalled the loop up to ~250 ms."""
        gc.callbacks.append(self._callback)
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        g = info["generation"]
        self.count[g] += 1
        self.max_ms[g] = max(self.max_ms[g], spent * 1000)
        self.total_s += spent

    def stats(self) -> dict[str, Any]:
        return {
            "count": list(self.count),
            "max_ms": [round(x, 1) for x in self.max_ms],
            "seconds": round(self.total_s, 3),
        }


class RestCost:
    """CPU seconds spent computing REST answers, by endpoint (the synchronous part)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.max_s: dict[str, float] = {}

    def add(self, endpoint: str, started_s: float) -> None:
        """``started_s``: ``time.thread_time()`` when the answer's work began."""
        spent = time.thread_time() - started_s
        self.seconds[endpoint] = self.seconds.get(endpoint, 0.0) + spent
        self.count[endpoint] = self.count.get(endpoint, 0) + 1
        self.max_s[endpoint] = max(self.max_s.get(endpoint, 0.0), spent)

    def stats(self) -> dict[str, Any]:
        return {
            e: {"count": n, "seconds": round(self.seconds[e], 4), "max_s": round(self.max_s[e], 4)}
            for e, n in self.count.items()
        }


def percentile(hist: dict[int, int], q: float) -> int | None:
    """The bucket holding quantile ``q`` of a histogram (None when empty)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return k
    return max(hist)


def hist_diff(after: dict[str, int], before: dict[str, int]) -> dict[int, int]:
    """The samples of a window: the later reading minus the earlier one."""
    out = {int(k): v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v > 0}
