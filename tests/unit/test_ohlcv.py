"""Ohlcv: the candle arithmetic of DESIGN.md section 3, on named fields."""

from __future__ import annotations

import random

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import Candle
from livecandle.domain.ohlcv import Ohlcv

P = 10**8  # one unit of price or quantity


def test_a_trade_whose_buyer_is_the_taker_counts_in_the_taker_buy_volumes() -> None:
    o = Ohlcv.of_trade(100 * P, 2 * P, 3, maker=False)
    assert (o.open, o.high, o.low, o.close) == (100 * P, 100 * P, 100 * P, 100 * P)
    assert (o.volume, o.quote_volume, o.trades) == (2 * P, 200 * P * P, 3)
    assert (o.taker_buy_volume, o.taker_buy_quote_volume) == (2 * P, 200 * P * P)


def test_a_trade_whose_buyer_is_the_maker_leaves_the_taker_buy_volumes_at_zero() -> None:
    o = Ohlcv.of_trade(100 * P, 2 * P, 1, maker=True)
    assert (o.volume, o.quote_volume) == (2 * P, 200 * P * P)
    assert (o.taker_buy_volume, o.taker_buy_quote_volume) == (0, 0)


def test_trades_set_high_low_close_and_sum_volumes_and_trade_counts() -> None:
    o = Ohlcv.of_trade(100 * P, 1 * P, 1, maker=False)
    o.add_trade(105 * P, 2 * P, 2, maker=True)
    o.add_trade(95 * P, 3 * P, 4, maker=False)
    o.add_trade(99 * P, 1 * P, 1, maker=True)
    assert (o.open, o.high, o.low, o.close) == (100 * P, 105 * P, 95 * P, 99 * P)
    assert o.volume == 7 * P
    assert o.quote_volume == (100 + 210 + 285 + 99) * P * P
    assert o.trades == 8
    assert o.taker_buy_volume == 4 * P
    assert o.taker_buy_quote_volume == (100 + 285) * P * P


def test_merging_the_later_trades_equals_adding_them_one_by_one() -> None:
    rng = random.Random(3)
    trades = [
        (rng.randint(1, 10**9), rng.randint(1, 10**9), rng.randint(1, 4), rng.random() < 0.5)
        for _ in range(200)
    ]
    whole = Ohlcv.of_trade(*trades[0])
    for t in trades[1:]:
        whole.add_trade(*t)
    for cut in (1, 50, 199):
        first, later = Ohlcv.of_trade(*trades[0]), Ohlcv.of_trade(*trades[cut])
        for t in trades[1:cut]:
            first.add_trade(*t)
        for t in trades[cut + 1 :]:
            later.add_trade(*t)
        first.merge(later)
        assert first == whole


def test_merge_keeps_the_first_open_and_takes_the_later_close() -> None:
    a = Ohlcv(10, 12, 9, 11, 5, 50, 2, 1, 10)
    a.merge(Ohlcv(20, 20, 8, 8, 1, 20, 1, 1, 20))
    assert a == Ohlcv(10, 20, 8, 8, 6, 70, 3, 2, 30)


def test_a_copy_does_not_change_with_the_original() -> None:
    a = Ohlcv.of_trade(10, 1, 1, maker=False)
    b = a.copy()
    a.add_trade(20, 1, 1, maker=False)
    assert b == Ohlcv.of_trade(10, 1, 1, maker=False)
    assert a != b


def test_a_candle_round_trips_through_its_sums() -> None:
    c = Candle(60_000, 119_999, 10, 12, 9, 11, 5, 50, 2, 1, 10)
    assert Ohlcv.of_candle(c).to_candle(c.open_ms, c.close_ms) == c


def test_the_sums_of_an_empty_candle_are_zero_at_its_price() -> None:
    c = Candle.empty(0, 59_999, 7 * P)
    assert Ohlcv.of_candle(c) == Ohlcv(7 * P, 7 * P, 7 * P, 7 * P)
    assert Ohlcv.of_candle(c).to_candle(0, 59_999) == c


def test_the_live_builders_inlined_trade_path_gives_the_same_candle_as_add_trade() -> None:
    rng = random.Random(8)
    builder = LiveCandleBuilder([INTERVALS["1h"]])
    open_ms = 1_717_200_000_000
    expected: Ohlcv | None = None
    for k in range(500):
        price, qty = rng.randint(1, 10**12), rng.randint(1, 10**9)
        count, maker = rng.randint(1, 3), rng.random() < 0.5
        builder.add(open_ms + k, price, qty, count, maker)
        if expected is None:
            expected = Ohlcv.of_trade(price, qty, count, maker)
        else:
            expected.add_trade(price, qty, count, maker)
    assert expected is not None
    assert builder.forming(0) == expected.to_candle(open_ms, open_ms + 3_600_000 - 1)
