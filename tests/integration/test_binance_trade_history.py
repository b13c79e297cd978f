"""``RestTradeHistory``: the live feed's questions about past trades, asked of the
emulator's ``/api/v3/aggTrades``."""

from __future__ import annotations

from decimal import Decimal

from livecandle.exchange.binance.feed_source import RestTradeHistory
from livecandle.exchange.binance.rest import BinanceRest
from tests.helpers import EmulatorProcess


async def test_the_first_trades_of_a_span_and_the_trades_after_an_id(
    emulator: EmulatorProcess,
) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        history = RestTradeHistory(rest)
        (latest,) = await rest.agg_trades("BTCUSDT", limit=1)
        start_ms = latest.T - 10_000
        first = await history.first_trades("BTCUSDT", start_ms, latest.T, 5)
        ids = [t.agg_id for t in first]
        assert ids == list(range(ids[0], ids[0] + 5))  # consecutive, oldest first
        assert all(start_ms <= t.time_ms <= latest.T for t in first)
        before = await history.trades_after("BTCUSDT", ids[0] - 2, 1)
        assert before[0].time_ms < start_ms  # the oldest of the span, none before it
        # further back than the hour aggTrades spans: the hour up to the end
        assert await history.first_trades("BTCUSDT", 0, latest.T, 1)
        after = await history.trades_after("BTCUSDT", ids[0], 3)
        assert after == first[1:4]  # the same trades, in domain units
        raw = await rest.agg_trades("BTCUSDT", from_id=ids[1], limit=1)
        assert (after[0].price, after[0].quantity) == (
            Decimal(raw[0].p) * 10**8,
            Decimal(raw[0].q) * 10**8,
        )
        assert (after[0].first_id, after[0].last_id, after[0].time_ms) == (
            raw[0].f,
            raw[0].l,
            raw[0].T,
        )
