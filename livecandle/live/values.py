"""LiveValues: the encoded ``live_candle`` values of one symbol, kept between writes.

At whole-market scale the live writer encodes thousands of values a second, each the
forming candle of one interval (nine amounts as 8-decimal text) and the candle that
closed before it. Between two writes of one series most of that text is unchanged: the
open never moves within a period, high and low rarely, the closed candle only at a
close. So each series keeps its last value and reformats only the amounts that changed;
the bytes are those of ``store.codec.encode_live`` (tests/unit/test_live_values.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.model import Candle, SeriesKey, format_quote, format_units
from livecandle.domain.ohlcv import Ohlcv
from livecandle.store import LiveWrite
from livecandle.store.codec import encode_closed

_enc = msgspec.json.Encoder()
_NO_SUMS = (-1,) * 9  # matches no amount: every field is formatted


class _Series:
    """The last value of one series: its JSON fields and the amounts they show."""

    __slots__ = ("complete", "key", "prev", "sums", "value")

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.value: dict[str, Any] = {}
        self.sums: tuple[int, ...] = _NO_SUMS
        self.prev: Candle | None = None
        self.complete = False


class LiveValues:
    """Encodes the ``live_candle`` values of a symbol's intervals (``encode``)."""

    __slots__ = ("_series", "symbol")

    def __init__(self, symbol: str, builder: LiveCandleBuilder) -> None:
        self.symbol = symbol
        self._series = [_Series(SeriesKey(symbol, i)) for i in builder.intervals]

    def encode(self, b: LiveCandleBuilder, now_ms: int) -> list[LiveWrite]:
        """The value of each interval with a forming candle, as of ``now_ms``."""
        out = []
        for i, s in enumerate(self._series):
            o = b.forming_sums(i)
            if o is None:
                continue
            v = s.value
            open_ms = b.open_of(i)
            if not v or v["time"] != open_ms:  # a new period: every field anew
                v = s.value = {
                    "symbol": self.symbol,
                    "interval": s.key.interval.name,
                    "time": open_ms,
                    "close_time": b.close_of(i),
                    "open": "",
                    "high": "",
                    "low": "",
                    "close": "",
                    "volume": "",
                    "quote_volume": "",
                    "trades": 0,
                    "taker_buy_volume": "",
                    "taker_buy_quote_volume": "",
                    "is_incomplete": True,
                    "source": "live",
                    "complete": False,
                    "updated_ms": 0,
                    "previous": None,
                }
                s.sums = _NO_SUMS
            self._update(s, v, o)
            v["complete"] = b.is_complete(i)
            v["updated_ms"] = now_ms
            prev, prev_complete = b.previous[i], b.previous_complete(i)
            if prev is not s.prev or prev_complete != s.complete or v["previous"] is None:
                s.prev, s.complete = prev, prev_complete
                v["previous"] = (
                    None if prev is None else msgspec.Raw(encode_closed(prev, prev_complete))
                )
            out.append(LiveWrite(s.key, _enc.encode(v)))
        return out

    @staticmethod
    def _update(s: _Series, v: dict[str, Any], o: Ohlcv) -> None:
        """Reformat the amounts of ``o`` that differ from those ``v`` shows."""
        opn, high, low, close, vol, qvol, _, tvol, tqvol = s.sums
        if o.open != opn:
            v["open"] = format_units(o.open)
        if o.high != high:
            v["high"] = format_units(o.high)
        if o.low != low:
            v["low"] = format_units(o.low)
        if o.close != close:
            v["close"] = format_units(o.close)
        if o.volume != vol:
            v["volume"] = format_units(o.volume)
        if o.quote_volume != qvol:
            v["quote_volume"] = format_quote(o.quote_volume)
        v["trades"] = o.trades
        if o.taker_buy_volume != tvol:
            v["taker_buy_volume"] = format_units(o.taker_buy_volume)
        if o.taker_buy_quote_volume != tqvol:
            v["taker_buy_quote_volume"] = format_quote(o.taker_buy_quote_volume)
        s.sums = (
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
