"""The ``candle_closed`` message: every candle that closed in one flush of the live
writer, for the fetcher's after-close checks.

One message per flush, not one per candle: at 00:00 UTC all six intervals of the whole
market close at once (9,600 candles of 1,600 symbols), and a PUBLISH each (with a script
call each for the stored candle) kept the stream process ~40% busy for ~2 s. Candles
are grouped by interval and open time (they close together), so a symbol's name is most
of the bytes::

    {"closed": [{"interval": "1m", "open_ms": 1700000000000,
                 "symbols": ["BTCUSDT", "ETHUSDT"]}, ...]}
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from livecandle.domain.intervals import parse_interval
from livecandle.domain.model import SeriesKey, validate_symbol


class _Group(msgspec.Struct, frozen=True):
    interval: str
    open_ms: int
    symbols: list[str]


class _Closings(msgspec.Struct, frozen=True):
    closed: list[_Group]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Closings)


def encode_closings(closed: Iterable[tuple[str, str, int]]) -> bytes:
    """The message of the ``(symbol, interval name, open_ms)`` candles that closed."""
    groups: dict[tuple[str, int], list[str]] = {}
    for symbol, interval, open_ms in closed:
        groups.setdefault((interval, open_ms), []).append(symbol)
    return _encoder.encode(_Closings([_Group(i, o, symbols) for (i, o), symbols in groups.items()]))


def decode_closings(data: bytes) -> list[tuple[SeriesKey, int]]:
    """``(series, open_ms)`` of each candle a message names; raises ``ValueError`` on a
    message that is not one (``msgspec.DecodeError`` is one); a group of an unknown
    interval or a malformed symbol is left out."""
    out: list[tuple[SeriesKey, int]] = []
    for group in _decoder.decode(data).closed:
        try:
            interval = parse_interval(group.interval)
        except ValueError:
            continue
        for symbol in group.symbols:
            try:
                out.append((SeriesKey(validate_symbol(symbol), interval), group.open_ms))
            except ValueError:
                continue
    return out
