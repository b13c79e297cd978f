"""Backoff: the one retry delay of livecandle, capped exponential with jitter.

The n-th consecutive failure waits a random time in ``[ceiling / 2, ceiling]`` with
``ceiling = min(cap_s, base_s * 2 ** (n - 1))`` ("equal jitter"): retries grow quickly,
never exceed the cap, and many clients failing together do not retry in step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


def delay_s(
    failures: int,
    base_s: float,
    cap_s: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """The wait after ``failures`` consecutive failures (1 = the first)."""
    ceiling = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return uniform(ceiling / 2, ceiling)


class Backoff:
    """Consecutive failures of one loop: ``next_s()`` after a failure, ``reset()`` after a
    success, ``await sleep()`` to count a failure and wait."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got {base_s} and {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_s(self) -> float:
        self.failures += 1
        return delay_s(self.failures, self.base_s, self.cap_s)

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self) -> float:
        """Count a failure and wait its delay; returns the delay."""
        delay = self.next_s()
        await asyncio.sleep(delay)
        return delay
