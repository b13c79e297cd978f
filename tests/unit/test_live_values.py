from __future__ import annotations

import random

import msgspec

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.clock import ManualClock
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SCALE, Candle
from livecandle.live.values import LiveValues
from livecandle.store.codec import encode_closed, encode_live

T0 = 1_700_000_000_000


def expected(b: LiveCandleBuilder, symbol: str, now_ms: int) -> list[bytes]:
    """What ``encode_live`` makes of the builder's forming candles (the reference)."""
    out = []
    for i, interval in enumerate(b.intervals):
        forming = b.forming(i)
        if forming is None:
            continue
        prev = b.previous[i]
        raw = None if prev is None else msgspec.Raw(encode_closed(prev, b.previous_complete(i)))
        out.append(encode_live(symbol, interval.name, forming, b.is_complete(i), raw, now_ms))
    return out


def test_kept_values_are_the_bytes_of_encoding_each_value_anew() -> None:
    rng = random.Random(7)
    intervals = [INTERVALS[n] for n in ("1m", "5m", "1h")]
    b = LiveCandleBuilder(intervals, ManualClock(T0), close_grace_ms=0)
    values = LiveValues("BTCUSDT", b)
    assert values.encode(b, T0) == []  # no trade yet: no value
    t = T0
    price = 100 * SCALE
    for step in range(3_000):
        t += rng.choice((1, 50, 700, 9_000, 61_000))  # within a period, or across some
        price = max(1, price + rng.randint(-3, 3) * SCALE // 100)
        if step % 97 == 0:  # a late trade corrects a closed candle
            b.add(t - 70_000, price, rng.randint(1, 10**8), 1, rng.random() < 0.5)
        b.add(t, price, rng.randint(1, 5 * 10**8), rng.randint(1, 3), rng.random() < 0.5)
        if step % 13 == 0:
            b.advance(t + 120_000)  # the clock closes periods without trades
        if step % 3 == 0:  # values are written every few trades
            got = [w.value for w in values.encode(b, t + 5)]
            assert got == expected(b, "BTCUSDT", t + 5)
            assert [w.series.interval for w in values.encode(b, t + 5)] == intervals


def test_amounts_are_formatted_as_the_codec_does_halves_rounding_to_even() -> None:
    from livecandle.domain.model import format_quote, format_units
    from livecandle.live.values import _quote, _units

    half = SCALE // 2
    quotes = [0, 1, half, half + 1, SCALE + half, 2 * SCALE + half, 3 * SCALE + half - 1]
    quotes += [q * SCALE + r for q in (0, 7, 12_345_678_901) for r in (0, half, SCALE - 1)]
    for q in quotes:
        assert _quote(q) == format_quote(q)
    for u in (0, 1, 99_999_999, SCALE, 12_345_678_912_345, -1, -SCALE - 5):
        assert _units(u) == format_units(u)


def test_a_close_is_encoded_once_as_the_codec_encodes_it_and_kept_as_previous() -> None:
    rng = random.Random(11)
    half = SCALE // 2
    m1 = INTERVALS["1m"]
    b = LiveCandleBuilder([m1], ManualClock(T0), close_grace_ms=0)
    values = LiveValues("BTCUSDT", b)
    for _ in range(300):
        price = rng.randint(1, 10**12)
        quote = rng.choice((0, half, 3 * SCALE + half, rng.randint(0, 10**20)))
        candle = Candle(
            T0,
            T0 + 59_999,
            price,
            price + 7,
            price - 1 if price > 1 else 1,
            price,
            rng.randint(0, 10**12),
            quote,
            rng.randint(0, 999),
            5,
            quote // 3,
        )
        complete = rng.random() < 0.5
        assert values.closed(m1, candle, complete) == encode_closed(candle, complete)
    b.add(T0, 100 * SCALE, SCALE)
    [closed] = b.add(T0 + 60_000, 101 * SCALE, SCALE)
    stored = values.closed(closed.interval, closed.candle, closed.complete)
    import livecandle.live.values as module

    encoded: list[Candle] = []
    original = module.closed_text

    def counting(c: Candle, complete: bool) -> str:
        encoded.append(c)
        return original(c, complete)

    module.closed_text = counting  # type: ignore[assignment]
    try:
        [value] = values.encode(b, T0 + 60_001)
    finally:
        module.closed_text = original  # type: ignore[assignment]
    assert encoded == []  # the live value's previous is the text stored for the close
    assert msgspec.json.decode(value.value)["previous"] == msgspec.json.decode(stored)
    assert [value.value] == expected(b, "BTCUSDT", T0 + 60_001)


def test_a_close_reusing_the_text_of_the_last_value_is_the_codecs_bytes() -> None:
    """A closed candle's amounts are mostly those its series was last written with (the
    text is reused) or its own price (an empty candle): each close is still exactly
    ``encode_closed`` of it, whatever was written before it."""
    rng = random.Random(5)
    intervals = [INTERVALS[n] for n in ("1m", "5m")]
    b = LiveCandleBuilder(intervals, ManualClock(T0), close_grace_ms=0)
    values = LiveValues("BTCUSDT", b)
    t, price, closes = T0, 100 * SCALE, 0
    for step in range(4_000):
        t += rng.choice((1, 300, 20_000, 61_000, 200_000))
        price = max(1, price + rng.randint(-2, 2) * SCALE // 100)
        closed = b.add(t, price, rng.randint(1, 5 * 10**8), rng.randint(1, 3), rng.random() < 0.5)
        if step % 7 == 0:
            closed = (closed or []) + b.advance(t + rng.choice((0, 60_000, 400_000)))
        for c in closed or []:
            closes += 1
            got = values.closed(c.interval, c.candle, c.complete)
            assert got == encode_closed(c.candle, c.complete)
        if rng.random() < 0.7:  # written after most trades: its last value is the candle
            values.encode(b, t)
    assert closes > 1_000
