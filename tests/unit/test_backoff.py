"""The one retry delay: capped exponential growth with equal jitter."""

from __future__ import annotations

import asyncio

import pytest

from livecandle.backoff import Backoff, delay_s


def lowest(low: float, high: float) -> float:
    return low


def highest(low: float, high: float) -> float:
    return high


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        (1, 0.25, 0.5),
        (2, 0.5, 1.0),
        (3, 1.0, 2.0),
        (6, 8.0, 16.0),
        (7, 15.0, 30.0),
        (50, 15.0, 30.0),
    ],
)
def test_the_nth_failure_waits_between_half_the_ceiling_and_the_ceiling(
    failures: int, low: float, high: float
) -> None:
    """ceiling = min(cap, base * 2 ** (n - 1)) with base 0.5 s and cap 30 s."""
    assert delay_s(failures, 0.5, 30.0, uniform=lowest) == low
    assert delay_s(failures, 0.5, 30.0, uniform=highest) == high


def test_zero_failures_waits_like_the_first() -> None:
    assert delay_s(0, 0.5, 30.0, uniform=highest) == delay_s(1, 0.5, 30.0, uniform=highest)


def test_random_delays_stay_in_bounds_and_are_jittered() -> None:
    for failures in (1, 4, 20):
        ceiling = min(10.0, 0.1 * 2 ** (failures - 1))
        delays = [delay_s(failures, 0.1, 10.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # clients failing together do not retry in step


def test_consecutive_failures_grow_to_the_cap_and_a_reset_starts_over() -> None:
    backoff = Backoff(base_s=1.0, cap_s=4.0)
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next_s() <= ceiling
    assert backoff.failures == len(ceilings)
    backoff.reset()
    assert backoff.failures == 0
    assert 0.5 <= backoff.next_s() <= 1.0


async def test_sleep_counts_a_failure_and_waits_its_delay() -> None:
    backoff = Backoff(base_s=0.02, cap_s=0.04)
    loop = asyncio.get_running_loop()
    started = loop.time()
    delay = await backoff.sleep()
    assert 0.01 <= delay <= 0.02 and backoff.failures == 1
    assert loop.time() - started >= delay - 0.001  # timers may fire a clock tick early


@pytest.mark.parametrize(("base_s", "cap_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_needs_a_positive_base_below_the_cap(base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="0 < base_s <= cap_s"):
        Backoff(base_s, cap_s)
