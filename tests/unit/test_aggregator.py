"""LiveCandleBuilder: Binance's aggregation rules, driven by trade times and a clock."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.clock import ManualClock
from livecandle.domain.intervals import INTERVAL_NAMES, INTERVALS, Interval
from livecandle.domain.model import Candle, Trade, format_quote, format_units, to_units
from livecandle.store.codec import to_row

M1, M5, S1 = INTERVALS["1m"], INTERVALS["5m"], INTERVALS["1s"]
T0 = 1_700_000_100_000  # a 5-minute boundary


def u(text: str) -> int:
    return to_units(text)


def test_first_trade_opens_the_candle_of_every_interval() -> None:
    b = LiveCandleBuilder([S1, M1, M5])
    assert b.add(T0 + 1500, u("100"), u("2")) is None
    for i, interval in enumerate(b.intervals):
        c = b.forming(i)
        assert c is not None
        assert c.open_ms == interval.open_of(T0 + 1500)
        assert (c.open, c.high, c.low, c.close, c.volume) == (u("100"),) * 4 + (u("2"),)


def test_ohlc_volumes_and_trade_count_follow_binance_rules() -> None:
    b = LiveCandleBuilder([M1])
    b.add(T0 + 1, u("100.01"), u("0.5"), count=1, maker=False)
    b.add(T0 + 2, u("101.50"), u("0.25"), count=3, maker=True)
    b.add(T0 + 3, u("99.99"), u("1.125"), count=2, maker=False)
    b.add(T0 + 4, u("100.10"), u("0.00001"), count=1, maker=True)
    c = b.forming(0)
    assert c is not None
    assert (
        format_units(c.open),
        format_units(c.high),
        format_units(c.low),
        format_units(c.close),
    ) == ("100.01000000", "101.50000000", "99.99000000", "100.10000000")
    assert format_units(c.volume) == "1.87501000"
    assert c.trades == 7  # sum of (l - f + 1), not the number of aggTrades
    assert format_quote(c.quote_volume) == "187.86975100"
    assert format_units(c.taker_buy_volume) == "1.62500000"  # only m == false
    assert format_quote(c.taker_buy_quote_volume) == "162.49375000"


def test_trade_at_next_open_starts_new_candle_and_closes_the_old_one() -> None:
    b = LiveCandleBuilder([M1])
    b.add(T0 + 59_999, u("10"), u("1"))
    closed = b.add(T0 + 60_000, u("11"), u("1"))
    assert closed is not None and len(closed) == 1
    assert closed[0].candle.open_ms == T0 and closed[0].candle.close_ms == T0 + 59_999
    assert closed[0].candle.close == u("10")
    forming = b.forming(0)
    assert forming is not None and forming.open_ms == T0 + 60_000 and forming.open == u("11")
    assert b.previous[0] == closed[0].candle


def test_a_period_without_trades_is_a_candle_at_the_previous_close() -> None:
    b = LiveCandleBuilder([M1])
    b.add(T0 + 5, u("10"), u("1"))
    b.add(T0 + 30_000, u("12"), u("1"))
    closed = b.add(T0 + 3 * 60_000 + 1, u("13"), u("1"))
    assert closed is not None
    assert [c.candle.open_ms for c in closed] == [T0, T0 + 60_000, T0 + 120_000]
    empty = closed[1].candle
    assert (empty.open, empty.high, empty.low, empty.close) == (u("12"),) * 4
    assert (empty.volume, empty.quote_volume, empty.trades) == (0, 0, 0)


def test_clock_closes_a_candle_after_the_grace_even_without_trades() -> None:
    clock = ManualClock(T0)
    b = LiveCandleBuilder([M1], clock=clock, close_grace_ms=1_000)
    b.add(T0 + 10, u("10"), u("1"))
    clock.set(T0 + 60_500)
    assert b.advance() == []  # within the grace: an in-flight trade may still come
    clock.set(T0 + 61_000)
    closed = b.advance()
    assert [c.candle.open_ms for c in closed] == [T0]
    forming = b.forming(0)
    assert forming is not None and forming.open_ms == T0 + 60_000
    assert (forming.open, forming.volume) == (u("10"), 0)  # empty so far: previous close


def test_late_trade_amends_the_unconfirmed_previous_candle() -> None:
    clock = ManualClock(T0)
    b = LiveCandleBuilder([M1, M5], clock=clock, close_grace_ms=100)
    b.add(T0 + 10, u("10"), u("1"))
    clock.set(T0 + 60_200)
    assert len(b.advance()) == 1  # 1m closed by the clock
    corrections = b.add(T0 + 59_990, u("9"), u("2"))  # was in flight
    assert corrections is not None and corrections[0].correction
    prev = corrections[0].candle
    assert (prev.low, prev.close, prev.volume, prev.trades) == (u("9"), u("9"), u("3"), 2)
    assert b.previous[0] == prev
    i5 = b.index(M5)
    five = b.forming(i5)
    assert five is not None and five.volume == u("3") and five.close == u("9")
    assert b.late_trades == 1


def test_stale_trade_older_than_the_previous_candle_is_dropped_and_counted() -> None:
    clock = ManualClock(T0)
    b = LiveCandleBuilder([M1], clock=clock, close_grace_ms=0)
    b.add(T0 + 10, u("10"), u("1"))
    clock.set(T0 + 3 * 60_000)
    b.advance()
    assert b.add(T0 + 5, u("1"), u("1")) is None
    assert b.stale_trades == 1
    forming = b.forming(0)
    assert forming is not None and forming.volume == 0


def test_a_late_trade_lost_for_a_short_interval_is_counted_stale_too() -> None:
    clock = ManualClock(T0)
    b = LiveCandleBuilder([M1, M5], clock=clock, close_grace_ms=0)
    b.add(T0 + 10, u("10"), u("1"))
    clock.set(T0 + 3 * 60_000)
    b.advance()  # 1m: minutes 0..2 closed; 5m: still forming
    assert b.add(T0 + 20, u("11"), u("1")) is None  # minute 0 is beyond 1m's previous
    assert (b.stale_trades, b.late_trades) == (1, 1)
    five = b.forming(1)
    assert five is not None and five.trades == 2  # the 5-minute candle took it


def test_invalid_agg_trades_are_skipped() -> None:
    b = LiveCandleBuilder([M1])
    assert b.add_trade(Trade(1, 0, 0, -1, -1, T0, True)) is None
    assert b.forming(0) is None


def test_seed_from_a_kline_snapshot_makes_the_first_candle_complete() -> None:
    b = LiveCandleBuilder([M5])
    trades = [Trade(i, u("100") + i, u("1"), i, i, T0 + i * 1000, False) for i in range(10)]
    b.add_trades(trades)
    assert not b.is_complete(0)
    open5 = M5.open_of(T0)
    # the exchange's view up to trade 5 (it also saw trades before our first one)
    snap = Candle(
        open5,
        M5.close_of(open5),
        u("90"),
        u("106"),
        u("80"),
        u("105"),
        u("50"),
        u("5000"),
        120,
        u("20"),
        u("2000"),
    )
    assert b.seed(0, snap, trades[6:])
    c = b.forming(0)
    assert c is not None and b.is_complete(0)
    assert (c.open, c.low, c.close) == (u("90"), u("80"), u("100") + 9)
    assert c.volume == u("54") and c.trades == 124
    assert not b.seed(0, Candle.empty(open5 - 300_000, open5 - 1, 1), [])


def reference(trades: list[Trade], interval: Interval) -> dict[int, list[str | int]]:
    """Independent Decimal implementation of Binance's rules (with empty periods)."""
    out: dict[int, list[str | int]] = {}
    by_open: dict[int, list[Trade]] = {}
    for t in trades:
        by_open.setdefault(interval.open_of(t.time_ms), []).append(t)
    o = interval.open_of(trades[0].time_ms)
    last_close = None
    end = interval.open_of(trades[-1].time_ms)
    while o <= end:
        ts = by_open.get(o, [])
        if ts:
            p = [Decimal(t.price) / 10**8 for t in ts]
            q = [Decimal(t.quantity) / 10**8 for t in ts]
            qv = sum((a * b for a, b in zip(p, q, strict=True)), Decimal(0))
            tq = sum(
                (a * b for a, b, t in zip(p, q, ts, strict=True) if not t.buyer_is_maker),
                Decimal(0),
            )
            tv = sum((b for b, t in zip(q, ts, strict=True) if not t.buyer_is_maker), Decimal(0))
            out[o] = [
                f"{p[0]:.8f}",
                f"{max(p):.8f}",
                f"{min(p):.8f}",
                f"{p[-1]:.8f}",
                f"{sum(q):.8f}",
                f"{qv:.8f}",
                sum(t.count for t in ts),
                f"{tv:.8f}",
                f"{tq:.8f}",
            ]
            last_close = out[o][3]
        else:
            out[o] = [
                last_close,
                last_close,
                last_close,
                last_close,
                "0.00000000",
                "0.00000000",
                0,
                "0.00000000",
                "0.00000000",
            ]
        o = interval.next_open(o)
    return out


def fields(c: Candle) -> list[str | int]:
    row = to_row(c)
    return [row[1], row[2], row[3], row[4], row[5], row[7], row[8], row[9], row[10]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_all_sixteen_intervals_equal_an_independent_decimal_aggregation(seed: int) -> None:
    rng = random.Random(seed)
    intervals = [INTERVALS[n] for n in INTERVAL_NAMES]
    start = 1_706_745_540_000  # 2024-01-31 23:59:00: crosses day, week? and month ends
    trades = []
    t = start
    for a in range(3000):
        t += rng.choice([0, 1, 7, 250, 1500, 4000, 30_000])
        count = rng.randint(1, 4)
        trades.append(
            Trade(
                a,
                rng.randint(1, 10**9) * 10**4,
                rng.randint(1, 10**6) * 1000,
                a * 10,
                a * 10 + count - 1,
                t,
                rng.random() < 0.5,
            )
        )
    b = LiveCandleBuilder(intervals)
    closed = b.add_trades(trades)
    for i, interval in enumerate(intervals):
        ref = reference(trades, interval)
        got = {c.candle.open_ms: fields(c.candle) for c in closed if c.interval is interval}
        forming = b.forming(i)
        assert forming is not None
        got[forming.open_ms] = fields(forming)
        assert got == ref, interval.name
        assert all(c.candle.close_ms == c.interval.close_of(c.candle.open_ms) for c in closed)


def test_lost_trades_make_every_candle_over_the_loss_incomplete_empty_ones_too() -> None:
    b = LiveCandleBuilder([M1])
    b.add(T0 + 10_000, u("100"), u("1"))  # minute 0
    b.advance(T0 + 2 * 60_000 + 5_000)  # the clock closes minute 0 and opens minute 2
    b.mark_incomplete(until_ms=T0 + 4 * 60_000 + 30_000)  # next trade seen: in minute 4
    closed = b.add(T0 + 4 * 60_000 + 30_000, u("101"), u("1")) or []
    # minutes 2 and 3 (empty) could hold the lost trades: none may claim to be complete
    assert [(c.candle.open_ms - T0, c.complete) for c in closed] == [
        (2 * 60_000, False),
        (3 * 60_000, False),
    ]
    assert not b.is_complete(0)  # minute 4: lost trades may be before 4:30
    closed = b.add(T0 + 5 * 60_000 + 1, u("102"), u("1")) or []
    assert [(c.candle.open_ms - T0, c.complete) for c in closed] == [(4 * 60_000, False)]
    assert b.is_complete(0)  # minute 5 opens after the loss


def test_without_a_loss_empty_candles_stay_complete() -> None:
    b = LiveCandleBuilder([M1])
    b.add(T0 + 10_000, u("100"), u("1"))
    b.add(T0 + 70_000, u("100"), u("1"))  # minute 1: minute 0 closes
    closed = b.add(T0 + 3 * 60_000 + 1, u("100"), u("1")) or []
    assert [(c.candle.open_ms - T0, c.complete) for c in closed] == [
        (60_000, True),
        (2 * 60_000, True),
    ]


def test_forming_fields_are_the_forming_sums_as_a_tuple() -> None:
    rng = random.Random(3)
    intervals = [INTERVALS[n] for n in ("1m", "5m", "1h")]
    b = LiveCandleBuilder(intervals, ManualClock(T0), close_grace_ms=0)
    assert b.forming_fields(0) is None  # no trade yet
    t = T0
    for step in range(2_000):
        t += rng.choice((1, 400, 9_000, 70_000))
        b.add(t, rng.randint(1, 10**10), rng.randint(1, 10**9), 1, rng.random() < 0.5)
        if step % 11 == 0:
            b.advance(t + 400_000)  # periods close without trades: empty forming candles
        for i in range(len(intervals)):
            o = b.forming_sums(i)
            assert o is not None
            assert b.forming_fields(i) == (
                o.open,
                o.high,
                o.low,
                o.close,
                o.volume,
                o.quote_volume,
                o.trades,
                o.taker_buy_volume,
                o.taker_buy_quote_volume,
            )


def test_periods_are_each_intervals_open_close_and_completeness() -> None:
    b = LiveCandleBuilder([M1, M5], ManualClock(T0), close_grace_ms=0)
    assert b.boundary_ms == -1  # no trade yet: nothing to close
    b.add(T0 + 61_000, u("100"), u("1"))
    opens, nexts, complete, previous_complete = b.periods()
    assert opens == [b.open_of(0), b.open_of(1)] == [T0 + 60_000, T0]
    assert nexts == [b.close_of(0) + 1, b.close_of(1) + 1] == [T0 + 120_000, T0 + 300_000]
    assert complete == [False, False] and previous_complete == [False, False]
    assert b.boundary_ms == T0 + 120_000  # the soonest close + 1
