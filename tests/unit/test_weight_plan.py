"""The weight plan's priorities: who goes first when weight or an in-flight slot frees up,
the share of a window each priority may fill, and the queue's stats and estimates. Time
is an injected clock; sleeping waits for the test to let the clock move."""

from __future__ import annotations

import asyncio

from livecandle.domain.clock import ManualClock
from livecandle.exchange.binance.weights import Priority, WeightBudget

MIN = 60_000
T0 = 28_333_334 * MIN  # a window start


class GatedClock(ManualClock):
    """``sleep(s)`` waits until the test opens the gate, then moves the clock to the
    moment the sleeper wanted (never back)."""

    def __init__(self, now_ms: int) -> None:
        super().__init__(now_ms)
        self.gate = asyncio.Event()
        self.sleepers = 0

    async def sleep(self, s: float) -> None:
        target_ms = self.now_ms() + round(s * 1000)
        self.sleepers += 1
        await self.gate.wait()
        self.set(max(self.now_ms(), target_ms))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def plan(clock: ManualClock, **kw: object) -> WeightBudget:
    sleep = clock.sleep if isinstance(clock, GatedClock) else None
    args: dict[str, object] = {"limit": 100, "safety": 1.0, "latency_s": 0.0}
    if sleep is not None:
        args["sleep"] = sleep
    args.update(kw)
    return WeightBudget(clock, **args)  # type: ignore[arg-type]


async def test_a_gap_fill_queued_behind_history_goes_first_in_the_next_window() -> None:
    clock = GatedClock(T0 + 10_000)
    b = plan(clock)
    await b.acquire(100, Priority.CLOSED)  # the window is full
    order: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        await b.acquire(2, priority)
        order.append(name)

    tasks = [asyncio.create_task(request(f"history{i}", Priority.HISTORY)) for i in range(3)]
    await settle()
    tasks.append(asyncio.create_task(request("gap fill", Priority.GAP_FILL)))
    tasks.append(asyncio.create_task(request("closed", Priority.CLOSED)))
    await settle()
    assert order == [] and clock.sleepers >= 1
    clock.gate.set()
    await asyncio.gather(*tasks)
    assert order == ["gap fill", "closed", "history0", "history1", "history2"]
    assert clock.now_ms() == T0 + MIN + 50


async def test_a_freed_in_flight_slot_goes_to_the_most_urgent_waiter() -> None:
    clock = ManualClock(T0 + 10_000)
    b = plan(clock, max_in_flight=1)
    answered = asyncio.Event()
    order: list[str] = []

    async def send(name: str, priority: Priority, hold: bool = False) -> None:
        async with b.sending(2, priority):
            order.append(name)
            if hold:
                await answered.wait()

    first = asyncio.create_task(send("first", Priority.HISTORY, hold=True))
    await settle()
    names = [
        ("reconcile", Priority.RECONCILE),
        ("history", Priority.HISTORY),
        ("closed", Priority.CLOSED),
        ("proxy", Priority.PROXY),
        ("gap fill", Priority.GAP_FILL),
        ("closed again", Priority.CLOSED),
    ]
    tasks = [asyncio.create_task(send(n, p)) for n, p in names]
    await settle()
    assert order == ["first"]
    answered.set()
    await asyncio.gather(first, *tasks)
    assert order == [
        "first",
        "gap fill",
        "closed",
        "closed again",
        "history",
        "reconcile",
        "proxy",
    ]
    assert b.in_flight_peak == 1


async def test_history_leaves_the_urgent_share_of_every_window() -> None:
    clock = GatedClock(T0 + 10_000)
    b = plan(clock, urgent_share=0.1)
    for _ in range(45):
        await b.acquire(2, Priority.HISTORY)
    assert b.used == 90
    late = asyncio.create_task(b.acquire(2, Priority.HISTORY))
    await settle()
    assert not late.done() and clock.sleepers == 1  # history waits for the next window
    await b.acquire(10, Priority.CLOSED)  # while a just-closed candle goes at once
    assert b.used == 100
    clock.gate.set()
    await late
    assert b.used == 2


async def test_history_may_fill_the_urgent_share_in_a_windows_last_twelfth() -> None:
    """Urgent work (an official candle the stream missed) comes just after candles
    close, at a window's start: in the window's last 5 s history may take the rest."""
    clock = GatedClock(T0 + 10_000)
    b = plan(clock, urgent_share=0.1)
    for _ in range(45):
        await b.acquire(2, Priority.HISTORY)
    late = asyncio.create_task(b.acquire(2, Priority.HISTORY))
    await settle()
    assert not late.done() and clock.sleepers == 1
    clock.gate.set()
    await late
    # in the same window, 5 s (and the skew margin) before its end
    assert clock.now_ms() == T0 + MIN + 50 - 5_000 and b.used == 92
    for _ in range(4):
        await b.acquire(2, Priority.HISTORY)
    assert clock.now_ms() == T0 + MIN + 50 - 5_000 and b.used == 100
    # past the urgent share's release history waits for the next window, like anyone
    await b.acquire(2, Priority.HISTORY)
    assert clock.now_ms() == T0 + MIN + 50 and b.used == 2


async def test_reconciliation_uses_spare_weight_only() -> None:
    clock = GatedClock(T0 + 10_000)
    b = plan(clock, spare_share=0.5)
    for _ in range(25):
        await b.acquire(2, Priority.RECONCILE)
    assert b.used == 50
    late = asyncio.create_task(b.acquire(2, Priority.RECONCILE))
    await settle()
    assert not late.done()  # no more than half of a window
    # and never ahead of a queued history request, even with weight to spare for it
    history = asyncio.create_task(b.acquire(2, Priority.HISTORY))
    await settle()
    assert history.done() and not late.done() and b.used == 52
    clock.gate.set()
    await late
    assert b.stats()["priorities"]["reconcile"]["sent"] == 26


async def test_a_heavy_low_priority_request_still_goes_alone_in_a_fresh_window() -> None:
    clock = GatedClock(T0 + 10_000)
    b = plan(clock, spare_share=0.5)
    await b.acquire(80, Priority.PROXY)  # heavier than its ceiling: alone, not forever
    assert b.used == 80


async def test_a_cancelled_waiter_lets_the_next_one_go() -> None:
    clock = ManualClock(T0 + 10_000)
    b = plan(clock, max_in_flight=1)
    answered = asyncio.Event()

    async def hold() -> None:
        async with b.sending(2, Priority.HISTORY):
            await answered.wait()

    holder = asyncio.create_task(hold())
    await settle()
    urgent = asyncio.create_task(b.acquire(2, Priority.GAP_FILL))
    history = asyncio.create_task(b.acquire(2, Priority.HISTORY))
    await settle()
    urgent.cancel()
    await asyncio.gather(urgent, return_exceptions=True)
    assert b.stats()["priorities"]["gap_fill"]["queued"] == 0
    answered.set()
    await asyncio.gather(holder, history)
    assert b.stats()["priorities"]["history"]["sent"] == 2


async def test_stats_show_the_queue_and_what_was_sent_per_priority() -> None:
    clock = GatedClock(T0 + 10_000)
    b = plan(clock)
    await b.acquire(96, Priority.CLOSED)
    waiting = [
        asyncio.create_task(b.acquire(4, Priority.GAP_FILL)),
        asyncio.create_task(b.acquire(2, Priority.HISTORY)),
        asyncio.create_task(b.acquire(2, Priority.HISTORY)),
    ]
    await settle()
    clock.advance(1_500)
    stats = b.stats()
    assert stats["used"] == 100 and stats["limit"] == 100
    p = stats["priorities"]
    assert p["closed"] == {
        "queued": 0,
        "queued_weight": 0,
        "oldest_wait_ms": None,
        "sent": 1,
        "weight_sent": 96,
        "ceiling": 100,
    }
    assert (p["gap_fill"]["queued"], p["gap_fill"]["weight_sent"]) == (0, 4)
    assert p["history"]["queued"] == 2 and p["history"]["queued_weight"] == 4
    assert p["history"]["oldest_wait_ms"] == 1_500
    clock.gate.set()
    await asyncio.gather(*waiting)
    p = b.stats()["priorities"]
    assert p["history"]["queued"] == 0 and p["history"]["sent"] == 2


async def test_eta_counts_the_queue_ahead_and_the_ceiling_of_each_window() -> None:
    clock = GatedClock(T0 + 10_000)
    b = plan(clock, urgent_share=0.1)
    assert b.eta_ms(90, Priority.HISTORY) == 0  # fits this window's history ceiling
    assert b.eta_ms(91, Priority.HISTORY) == MIN - 10_000 + 50  # the next window
    assert b.eta_ms(91, Priority.GAP_FILL) == 0
    # 90 now, 90 in the next window, the last 90 at the start of the one after
    assert b.eta_ms(90 + 180, Priority.HISTORY) == 2 * MIN - 10_000 + 50
    await b.acquire(100, Priority.CLOSED)
    gap = asyncio.create_task(b.acquire(30, Priority.GAP_FILL))
    await settle()
    # the queued gap fill goes first: 30 + 70 > 90 spills into a second window
    assert b.eta_ms(60, Priority.HISTORY) == MIN - 10_000 + 50
    assert b.eta_ms(61, Priority.HISTORY) == 2 * MIN - 10_000 + 50
    assert b.eta_ms(60, Priority.PROXY) == 2 * MIN - 10_000 + 50  # ceiling 50 a window
    b.block(300, "HTTP 418")
    assert b.eta_ms(1, Priority.GAP_FILL) >= 300_000
    gap.cancel()
    await asyncio.gather(gap, return_exceptions=True)


def test_in_flight_never_exceeds_the_http_pool() -> None:
    b = WeightBudget(ManualClock(T0), max_in_flight=64, latency_s=10.0, connections=8)
    assert b.in_flight_cap == 8
