"""``RestTradeHistory``: the live feed's questions about past trades, asked of the
emulator's ``/api/v3/aggTrades``."""

from __future__ import annotations

from decimal import Decimal

from livecandle.exchange.binance.feed_source import RestTradeHistory
from livecandle.exchange.binance.rest import BinanceRest
from tests.helpers import EmulatorProcess


async def test_the_newest_trades_and_the_trades_after_an_id(emulator: EmulatorProcess) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        history = RestTradeHistory(rest)
        newest = await history.latest_trades("BTCUSDT", 5)
        ids = [t.agg_id for t in newest]
        assert ids == list(range(ids[0], ids[0] + 5))  # consecutive, oldest first
        after = await history.trades_after("BTCUSDT", ids[0], 3)
        assert after == newest[1:4]  # the same trades, in domain units
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
