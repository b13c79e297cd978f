"""LiveValues: the encoded ``live_candle`` values of one symbol, kept between writes.

At whole-market scale the live writer encodes thousands of values a second, each the
forming candle of one interval (nine amounts as 8-decimal text) and the candle that
closed before it. Between two writes of one series most of that text is unchanged: the
open never moves within a period, high and low rarely, the closed candle only at a
close. So each series keeps the text of its last value's parts (the head up to the open,
each amount, the closed candle) and reformats only the amounts that changed; the value
is then one string template, not a dict through a JSON encoder. The bytes are those of
``store.codec.encode_live`` (tests/unit/test_live_values.py).
"""

from __future__ import annotations

import msgspec

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.intervals import Interval
from livecandle.domain.model import SCALE, Candle, SeriesKey, format_quote, format_units
from livecandle.store import LiveWrite

_enc = msgspec.json.Encoder()
_HALF = SCALE // 2
# ``LiveWrite(key, value)`` without the named tuple's Python-level ``__new__``: half the
# cost, ~18,000 values a second on the whole market
_live_write = tuple.__new__


def _units(units: int) -> str:
    """``format_units`` (the common case inlined: this runs ~50,000 times a second)."""
    if units < 0:
        return format_units(units)
    digits = "%09d" % units  # noqa: UP031
    return digits[:-8] + "." + digits[-8:]


def _quote(quote_units: int) -> str:
    """``format_quote``, likewise: 1e-16 units at 8 decimals, rounding half to even."""
    q, r = divmod(quote_units, SCALE)
    if r >= _HALF and (r > _HALF or q & 1):
        q += 1
    if q < 0:
        return format_quote(quote_units)
    digits = "%09d" % q  # noqa: UP031
    return digits[:-8] + "." + digits[-8:]


def closed_text(c: Candle, complete: bool) -> str:
    """A closed live candle's JSON (``store.codec.encode_closed``'s bytes, as text), by
    template: at 00:00 UTC the whole market's 9,600 close in one flush."""
    return _closed_json(
        c,
        _units(c.open),
        _units(c.high),
        _units(c.low),
        _units(c.close),
        _units(c.volume),
        _quote(c.quote_volume),
        _units(c.taker_buy_volume),
        _quote(c.taker_buy_quote_volume),
        complete,
    )


def _closed_json(
    c: Candle,
    opn: str,
    high: str,
    low: str,
    close: str,
    volume: str,
    quote: str,
    taker: str,
    taker_quote: str,
    complete: bool,
) -> str:
    """``closed_text`` of ``c`` with its amounts given as text."""
    return (
        f'{{"time":{c.open_ms},"close_time":{c.close_ms},"open":"{opn}",'
        f'"high":"{high}","low":"{low}","close":"{close}",'
        f'"volume":"{volume}","quote_volume":"{quote}",'
        f'"trades":{c.trades},"taker_buy_volume":"{taker}",'
        f'"taker_buy_quote_volume":"{taker_quote}",'
        f'"is_incomplete":false,"confirmed":false,"source":"live",'
        f'"complete":{"true" if complete else "false"}}}'
    )


class _Series:
    """The text of the last value of one series, by part, and the amounts it shows."""

    __slots__ = (
        "close",
        "complete",
        "head",
        "high",
        "key",
        "low",
        "open",
        "open_ms",
        "open_text",
        "prev",
        "prev_json",
        "quote_volume",
        "taker_buy_quote_volume",
        "taker_buy_volume",
        "text",
        "volume",
    )

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.open_ms = -1  # the period the head is of
        self.open = -1  # -1 matches no amount: every field is formatted at first
        self.open_text = ""
        self.head = ""  # '{"symbol":...,"open":"...",'
        self.high = self.low = self.close = self.volume = self.quote_volume = -1
        self.taker_buy_volume = self.taker_buy_quote_volume = -1
        # the formatted amounts, in the order of the value: high, low, close, volume,
        # quote volume, taker-buy volume, taker-buy quote volume
        self.text = ["", "", "", "", "", "", ""]
        self.prev: Candle | None = None
        self.complete = False
        self.prev_json = "null"


def _closed_reusing(s: _Series, c: Candle, complete: bool) -> str:
    """``closed_text``, with the text of each amount the series' last value showed (a
    series closes mostly with the amounts it was last written with: at 00:00 UTC most of
    the whole market's 9,600 closes), and an empty candle's price formatted once."""
    t = s.text
    opn = s.open_text if c.open == s.open else _units(c.open)
    return _closed_json(
        c,
        opn,
        t[0] if c.high == s.high else opn if c.high == c.open else _units(c.high),
        t[1] if c.low == s.low else opn if c.low == c.open else _units(c.low),
        t[2] if c.close == s.close else opn if c.close == c.open else _units(c.close),
        t[3] if c.volume == s.volume else _units(c.volume),
        t[4] if c.quote_volume == s.quote_volume else _quote(c.quote_volume),
        t[5] if c.taker_buy_volume == s.taker_buy_volume else _units(c.taker_buy_volume),
        t[6]
        if c.taker_buy_quote_volume == s.taker_buy_quote_volume
        else _quote(c.taker_buy_quote_volume),
        complete,
    )


class LiveValues:
    """Encodes the ``live_candle`` values of a symbol's intervals (``encode``)."""

    __slots__ = ("_by_interval", "_names", "_series", "symbol")

    def __init__(self, symbol: str, builder: LiveCandleBuilder) -> None:
        self.symbol = symbol
        self._series = [_Series(SeriesKey(symbol, i)) for i in builder.intervals]
        self._by_interval = {s.key.interval: s for s in self._series}
        sym = _enc.encode(symbol).decode()
        self._names = [
            f'{{"symbol":{sym},"interval":{_enc.encode(i.name).decode()},"time":'
            for i in builder.intervals
        ]

    def series_of(self, interval: Interval) -> SeriesKey:
        """The symbol's series of ``interval`` (one object per series, not one a call)."""
        s = self._by_interval.get(interval)
        return SeriesKey(self.symbol, interval) if s is None else s.key

    def closed(self, interval: Interval, candle: Candle, complete: bool) -> bytes:
        """The stored value of a candle of ``interval`` that closed (``closed_text``),
        kept as the ``previous`` of the series' next value: each close is encoded once,
        not once for ``live_closed`` and again for ``live_candle``."""
        s = self._by_interval.get(interval)
        if s is None:
            return closed_text(candle, complete).encode()
        text = _closed_reusing(s, candle, complete)
        # the builder's newest closed candle is this object (or a later one)
        s.prev, s.complete, s.prev_json = candle, complete, text
        return text.encode()

    def encode(self, b: LiveCandleBuilder, now_ms: int) -> list[LiveWrite]:
        """The value of each interval with a forming candle, as of ``now_ms``."""
        out = []
        previous = b.previous
        opens, nexts, complete, previous_complete = b.periods()
        forming = b.forming_fields
        last_close, last_close_text = -1, ""
        for i, s in enumerate(self._series):
            f = forming(i)
            if f is None:
                continue
            opn, high, low, close, vol, qvol, trades, tvol, tqvol = f
            open_ms = opens[i]
            if open_ms != s.open_ms or opn != s.open:  # a new period (or a seeded open)
                s.open_ms, s.open, s.open_text = open_ms, opn, _units(opn)
                s.head = (
                    f'{self._names[i]}{open_ms},"close_time":{nexts[i] - 1},"open":"{s.open_text}",'
                )
            text = s.text
            # a period's first value (at 00:00 UTC every series') shows one trade: its
            # high, low and close are its open, its amounts often each other's
            if high != s.high:
                s.high, text[0] = high, s.open_text if high == opn else _units(high)
            if low != s.low:
                s.low, text[1] = low, s.open_text if low == opn else _units(low)
            if close != s.close:  # mostly the same close in every interval: once
                if close != last_close:
                    last_close = close
                    last_close_text = s.open_text if close == opn else _units(close)
                s.close, text[2] = close, last_close_text
            if vol != s.volume:
                s.volume, text[3] = vol, _units(vol)
            if qvol != s.quote_volume:
                s.quote_volume, text[4] = qvol, _quote(qvol)
            if tvol != s.taker_buy_volume:
                s.taker_buy_volume, text[5] = tvol, text[3] if tvol == vol else _units(tvol)
            if tqvol != s.taker_buy_quote_volume:
                s.taker_buy_quote_volume, text[6] = (
                    tqvol,
                    text[4] if tqvol == qvol else _quote(tqvol),
                )
            prev, prev_complete = previous[i], previous_complete[i]
            if prev is not s.prev or prev_complete != s.complete:
                s.prev, s.complete = prev, prev_complete
                s.prev_json = "null" if prev is None else closed_text(prev, prev_complete)
            value = (
                f'{s.head}"high":"{text[0]}","low":"{text[1]}","close":"{text[2]}",'
                f'"volume":"{text[3]}","quote_volume":"{text[4]}","trades":{trades},'
                f'"taker_buy_volume":"{text[5]}","taker_buy_quote_volume":"{text[6]}",'
                f'"is_incomplete":true,"source":"live",'
                f'"complete":{"true" if complete[i] else "false"},'
                f'"updated_ms":{now_ms},"previous":{s.prev_json}}}'
            )
            out.append(_live_write(LiveWrite, (s.key, value.encode())))
        return out
