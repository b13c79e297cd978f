"""A new lease owner continues a symbol from another worker's stored live state (issue 10
item 2): the forming candle as stored, covering trades up to the stored aggTrade id; the
trades after it are a gap filled from the exchange's history, none lost or counted twice."""

from __future__ import annotations

import asyncio

from livecandle.domain.clock import ManualClock
from livecandle.domain.events import CandleSnapshot, TradeEvent
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SCALE, Candle
from livecandle.live.feed import LiveFeed
from tests.unit.test_live_feed import T0, MemoryHistory, agg

PRICE = 100 * SCALE


def _candle(trades: int) -> Candle:
    """The 1m candle of aggregate trades 1..trades (one unit each at PRICE)."""
    quote = trades * PRICE * SCALE
    return Candle(
        T0, T0 + 59_999, PRICE, PRICE, PRICE, PRICE, trades * SCALE, quote, trades,
        trades * SCALE, quote,
    )  # fmt: skip


def _agg(a: int) -> TradeEvent:
    """Aggregate trade ``a`` of one individual trade, id ``a`` (ids run on, as on Binance)."""
    return agg(a, t=T0 + a * 100, f=a)


async def _settled(f: LiveFeed) -> None:
    while f._fills:
        await asyncio.gather(*f._fills)


async def test_a_resumed_symbol_fills_the_hole_and_its_candle_counts_each_trade_once() -> None:
    history = MemoryHistory([_agg(a).trade() for a in range(1, 21)])
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, ManualClock(T0 + 5_000))
    # stored by the worker before: trades 1..5 (individual trade ids 1..5)
    stored = CandleSnapshot("BTCUSDT", "1m", T0, T0 + 59_999, -1, 5, False, T0, _candle(5))
    f.resume("BTCUSDT", 5, 5, [stored])
    f.handle(_agg(9))  # the stream's first trade for the new owner
    await _settled(f)
    b = f.states["BTCUSDT"].live.builder
    assert b.forming(0) == _candle(9)  # 1..5 stored, 6..8 fetched, 9 streamed
    assert b.is_complete(0)
    assert history.asked >= 1
    f.handle(_agg(10))
    f.handle(_agg(5))  # a trade the stored candle holds: not counted again
    assert b.forming(0) == _candle(10)


async def test_without_a_stored_candle_the_resumed_symbol_is_exact_but_incomplete() -> None:
    history = MemoryHistory([_agg(a).trade() for a in range(1, 21)])
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, ManualClock(T0 + 5_000))
    f.resume("BTCUSDT", 5, 5, [])
    f.handle(_agg(9))
    await _settled(f)
    b = f.states["BTCUSDT"].live.builder
    forming = b.forming(0)
    assert forming is not None and forming.trades == 4  # 6..9, never 1..5 again
    assert not b.is_complete(0)
