"""The weight plan in front of the HTTP pool, against the emulator over real HTTP: many
callers at once queue in the plan, by priority, never in the pool."""

from __future__ import annotations

import asyncio

from livecandle.domain.clock import ServerClock
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.exchange.binance.weights import WeightBudget
from tests.helpers import EmulatorProcess

MIN = 60_000
SERIES = [(s, i) for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "3m", "5m", "15m", "1h")]


async def test_two_thousand_calls_at_once_never_time_out_in_the_pool_nor_trip_a_429(
    emulator: EmulatorProcess,
) -> None:
    clock = ServerClock()
    # the plan would let 64 go at once: the pool of 4 caps it
    budget = WeightBudget(clock, max_in_flight=64, latency_s=1.0)
    async with BinanceRest(emulator.rest_url, clock, budget, max_connections=4) as rest:
        now_ms = await rest.server_time()
        start_ms = (now_ms // MIN - 500) * MIN

        async def call(n: int) -> int:
            symbol, interval = SERIES[n % len(SERIES)]
            return len(await rest.klines(symbol, interval, start_ms, limit=5))

        async with asyncio.timeout(120):
            results = await asyncio.gather(*(call(n) for n in range(2000)), return_exceptions=True)
        state = await asyncio.to_thread(emulator.state)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []  # no PoolTimeout, nor anything else
    assert all(r == 5 for r in results)
    assert state["rejected_429"] == 0 and state["rejected_418"] == 0
    assert budget.in_flight_peak == 4
    stats = budget.stats()["priorities"]["history"]
    # and the one server_time call (weight 1)
    assert (stats["sent"], stats["weight_sent"], stats["queued"]) == (2001, 4001, 0)


async def test_a_gap_fill_is_not_starved_by_a_queue_of_history(
    emulator: EmulatorProcess,
) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        now_ms = await rest.server_time()
        start_ms = (now_ms // MIN - 500) * MIN
        done = 0

        async def history(n: int) -> None:
            nonlocal done
            symbol, interval = SERIES[n % len(SERIES)]
            await rest.klines(symbol, interval, start_ms, limit=5)
            done += 1

        tasks = [asyncio.create_task(history(n)) for n in range(600)]
        await asyncio.sleep(0.05)
        queued = rest.budget.stats()["priorities"]["history"]["queued"]
        assert queued > 300  # a long queue of history is waiting
        trades = await rest.agg_trades("BTCUSDT", limit=10)  # priority GAP_FILL
        done_when_filled = done
        async with asyncio.timeout(120):
            await asyncio.gather(*tasks)
    assert len(trades) == 10
    # it went past every queued history request: only those already in flight (and
    # their answers) came before it
    assert done_when_filled <= 600 - queued + 2 * rest.budget.max_in_flight
    assert rest.budget.stats()["priorities"]["gap_fill"]["sent"] == 1
