"""WeightBudget on an injected clock whose injected sleep moves that clock: no real waiting."""

from __future__ import annotations

import pytest

from livecandle.domain.clock import ManualClock
from livecandle.exchange.binance.weights import WeightBudget

MIN = 60_000
T0 = 28_333_334 * MIN  # a window start (1_700_000_040_000)


class SleepingClock(ManualClock):
    """``sleep(s)`` records ``s`` and moves the clock on by it."""

    def __init__(self, now_ms: int) -> None:
        super().__init__(now_ms)
        self.slept_s: list[float] = []

    async def sleep(self, s: float) -> None:
        self.slept_s.append(s)
        assert len(self.slept_s) < 10, "acquire keeps sleeping"
        self.advance(round(s * 1000))


def budget(clock: SleepingClock, limit: int = 100, window_ms: int = MIN) -> WeightBudget:
    return WeightBudget(clock, limit=limit, window_ms=window_ms, safety=1.0, sleep=clock.sleep)


async def test_requests_within_the_budget_go_at_once() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(60)
    await b.acquire(40)
    assert clock.slept_s == []
    assert (b.used, b.requests, b.weight_sent, b.waits) == (100, 2, 100, 0)


async def test_the_budget_keeps_a_safety_margin_below_the_limit() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = WeightBudget(clock, limit=100, safety=0.97, sleep=clock.sleep)
    assert b.budget == 97
    await b.acquire(97)
    await b.acquire(1)
    assert b.waits == 1


async def test_a_full_window_waits_for_the_next_window() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(60)
    await b.acquire(60)
    # until the next window starts, plus a margin for the exchange's clock
    assert clock.slept_s == [50.05]
    assert clock.now_ms() == T0 + MIN + 50
    assert (b.used, b.requests, b.waits) == (60, 2, 1)


async def test_a_request_heavier_than_the_budget_goes_alone_in_a_fresh_window() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(500)
    assert clock.slept_s == [] and b.used == 500


async def test_observe_syncs_up_to_the_exchange_count_never_down() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(2)
    b.observe(90)  # other clients of this IP spent weight too
    assert b.used == 90
    b.observe(10)
    assert b.used == 90
    await b.acquire(20)  # 110 > 100: waits for the next window
    assert clock.slept_s == [50.05] and b.used == 20


async def test_observe_in_a_new_window_starts_from_the_exchange_count() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(90)
    clock.set(T0 + MIN + 1_000)
    b.observe(3)
    assert b.used == 3


async def test_block_pauses_every_request_until_it_ends() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    b.block(30, "HTTP 429 on klines")
    assert b.blocked_until_ms == T0 + 40_000 and b.block_reason == "HTTP 429 on klines"
    b.block(5, "a shorter pause")  # never shortens the pause already in force
    assert b.blocked_until_ms == T0 + 40_000 and b.block_reason == "HTTP 429 on klines"
    await b.acquire(1)
    assert clock.slept_s == [30.0] and clock.now_ms() == T0 + 40_000
    assert (b.used, b.waits) == (1, 1)


async def test_a_ban_longer_than_the_window_is_waited_out_whole() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    b.block(120, "HTTP 418 on klines: banned")
    await b.acquire(1)
    assert sum(clock.slept_s) == 120.0 and b.used == 1


@pytest.mark.parametrize(
    ("window_ms", "header"),
    [
        (MIN, "x-mbx-used-weight-1m"),
        (2 * MIN, "x-mbx-used-weight-2m"),
        (3_600_000, "x-mbx-used-weight-1h"),
        (86_400_000, "x-mbx-used-weight-1d"),
        (2_000, "x-mbx-used-weight-2s"),
    ],
)
def test_the_header_names_the_window(window_ms: int, header: str) -> None:
    assert budget(SleepingClock(T0), window_ms=window_ms).header == header


async def test_set_limit_changes_budget_and_window_and_keeps_what_was_used() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = WeightBudget(clock, sleep=clock.sleep)  # Binance's default: 6000 per minute
    await b.acquire(50)
    b.set_limit(100, 2_000)  # learned from exchangeInfo
    assert (b.limit, b.window_ms, b.budget, b.used) == (100, 2_000, 97, 50)
    assert b.header == "x-mbx-used-weight-2s"
    await b.acquire(50)  # 100 > 97: waits for the next 2-second window
    assert clock.slept_s == [0.05] and clock.now_ms() == T0 + 10_050
    assert b.used == 50
