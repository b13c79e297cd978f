"""The emulator's klines answers, computed as numpy columns and formatted at once, are
byte for byte those of the per-row definition: each row the aggregate of the trades in
its own range (history and live), an empty row at the previous close, no row before the
listing, after now, or empty inside an exchange outage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from livecandle.domain.intervals import DAY_MS, HOUR_MS, INTERVALS, MINUTE_MS, Interval
from livecandle.domain.model import SCALE, Candle
from livecandle.emulator import wire
from livecandle.emulator.kline_table import KlineTable, kline_table
from livecandle.emulator.klines import EXTRA, klines
from livecandle.emulator.market import Revealed, SymbolMarket
from livecandle.emulator.tape import agg_candle

LIVE_MS = 1_764_590_460_000  # 12:01 UTC
OUTAGES = (
    (LIVE_MS - 40 * DAY_MS - 7 * HOUR_MS, LIVE_MS - 39 * DAY_MS),
    (LIVE_MS - 3 * HOUR_MS - 13 * MINUTE_MS, LIVE_MS - 2 * HOUR_MS),
    (LIVE_MS - 300 * DAY_MS, LIVE_MS - 290 * DAY_MS),
)


def market(listed_ms: int | None = None) -> SymbolMarket:
    sm = SymbolMarket(
        "KAZOUSDT",
        7,
        LIVE_MS if listed_ms is None else listed_ms,
        history_days=400 if listed_ms is None else 0,
        outages_ms=OUTAGES,
        clock=Revealed(LIVE_MS + 200_000),
        listed_ms=listed_ms,
    )
    rng = random.Random(3)
    t = sm.live_start_ms
    while t < LIVE_MS + 200_000:
        sm.add_trade(t)
        t += rng.choice([7, 400, 3_000, 70_000])  # some empty seconds and minutes
    return sm


def per_row(sm: SymbolMarket, interval: Interval, opens: list[int]) -> list[Candle]:
    """The definition, one row at a time."""
    out: list[Candle] = []
    prev: int | None = None
    for o in opens:
        nxt = interval.next_open(o)
        if nxt <= sm.listing_ms or o > sm.revealed_ms:
            continue
        agg = sm.range_agg(o, nxt)
        if agg is not None:
            out.append(agg_candle(agg, o, nxt - 1))
        elif not sm.in_outage(o, nxt):
            out.append(Candle.empty(o, nxt - 1, sm.price_before(o) if prev is None else prev))
        else:
            continue
        prev = out[-1].close
    return out


def per_row_klines(
    sm: SymbolMarket, interval: Interval, start_ms: int | None, limit: int
) -> list[Candle]:
    """``klines``'s paging, one open at a time."""
    first = interval.open_of(sm.listing_ms)
    last = interval.open_of(sm.revealed_ms)
    if start_ms is not None:
        o = max(first, interval.open_of(start_ms))
        if o < start_ms:
            o = interval.next_open(o)
        out: list[Candle] = []
        while o <= last and len(out) < limit:
            opens = []
            while o <= last and len(opens) < limit - len(out) + EXTRA:
                opens.append(o)
                o = interval.next_open(o)
            out += per_row(sm, interval, opens)
        return out[:limit]
    opens = []
    o = last
    while o >= first and len(opens) < limit + EXTRA:
        opens.append(o)
        o = interval.shift(o, -1)
    return per_row(sm, interval, opens[::-1])[-limit:]


@pytest.mark.parametrize("listed", [False, True])
def test_klines_columns_are_byte_for_byte_the_per_row_klines(listed: bool) -> None:
    sm = market(listed_ms=LIVE_MS - 90_000 if listed else None)
    rng = random.Random(11 + listed)
    names = ["1s", "1m", "3m", "5m", "15m", "1h", "4h", "12h", "1d", "3d", "1w", "1M"]
    for _ in range(120):
        interval = INTERVALS[rng.choice(names)]
        span = interval.nominal_ms * rng.choice([3, 100, 1_000])
        start = rng.choice([None, LIVE_MS - rng.randrange(span), LIVE_MS - 401 * DAY_MS])
        limit = rng.choice([1, 17, 500, 1_000])
        got = wire.klines_body(klines(sm, interval, start, None, limit))
        assert got == wire.kline_rows(per_row_klines(sm, interval, start, limit)), (
            interval,
            start,
            limit,
        )


def test_an_empty_range_before_the_first_trade_shows_the_fair_price() -> None:
    sm = SymbolMarket(
        "KAZOUSDT",
        7,
        LIVE_MS - 90_000,
        history_days=0,
        clock=Revealed(LIVE_MS),
        listed_ms=LIVE_MS - 90_000,
    )
    sm.add_trade(LIVE_MS - 50_000)
    interval = INTERVALS["1s"]
    opens = np.arange(LIVE_MS - 90_000, LIVE_MS - 80_000, 1_000, dtype=np.int64)
    table = kline_table(sm, interval, opens)
    assert wire.klines_body(table) == wire.kline_rows(per_row(sm, interval, opens.tolist()))
    assert len(table) == 10


def test_the_column_formatter_prints_every_width_as_the_row_formatter() -> None:
    rng = random.Random(5)
    edges = [0, 1, 9, 10, 99_999_999, SCALE, 10**12 - 1, 10**12, 2**61]

    def amount() -> int:
        return rng.choice([rng.choice(edges), rng.randrange(10 ** rng.randrange(1, 19))])

    for n in (1, 2, 7, 300):
        rows = []
        for _ in range(n):
            o, c = amount(), amount()
            low, high = min(o, c) // 2, max(o, c) * 2
            t = rng.choice([SCALE, 1_764_590_460_000, 10**15 + 3])
            rows.append(
                Candle(
                    t,
                    t + amount() % 10**9,
                    o,
                    high,
                    low,
                    c,
                    amount(),
                    amount() * SCALE,
                    rng.choice([0, 1, 9, 10, 12_345]),
                    amount(),
                    amount() * SCALE,
                )
            )
        table = KlineTable(
            np.array(
                [
                    [
                        r.open_ms,
                        r.close_ms,
                        r.open,
                        r.high,
                        r.low,
                        r.close,
                        r.volume,
                        r.quote_volume // SCALE,
                        r.trades,
                        r.taker_buy_volume,
                        r.taker_buy_quote_volume // SCALE,
                    ]
                    for r in rows
                ],
                np.int64,
            ).T.copy()
        )
        assert wire.klines_body(table) == wire.kline_rows(rows)
    assert wire.klines_body(KlineTable.empty()) == b"[]"
