"""The stored and published forms of a domain ``Candle``, both ways (DESIGN.md section 2).

- A *row*: Binance's 12-field kline array, the format of the ``klines_z`` members and of
  ``/api/v3/klines``: times as int ms, amounts as strings with 8 decimals (quote volumes
  rounded to 8 decimals by ``format_quote``), trades as an int, the ignored field "0".
- The *live* JSON of a ``live_candle`` value and of the live batch messages: the same
  amounts under names (``time``, ``open`` ... ``taker_buy_quote_volume``), wrapped by
  ``live_value`` (the forming candle) and ``closed_value`` (a closed, unconfirmed one).

Byte-for-byte what the exchange sends: tests compare our rows with Binance's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from livecandle.domain.model import Candle, format_quote, format_units, quote_to_units, to_units

ZERO = "0.00000000"
_enc = msgspec.json.Encoder()


def to_row(c: Candle) -> list[Any]:
    """Binance's 12-field kline array, e.g. ``[1634943780000, "60685.22000000", ...,
    1634943839999, "1313200.01340410", 617, "12.28492000", "745719.41022840", "0"]``."""
    return [
        c.open_ms,
        format_units(c.open),
        format_units(c.high),
        format_units(c.low),
        format_units(c.close),
        format_units(c.volume),
        c.close_ms,
        format_quote(c.quote_volume),
        c.trades,
        format_units(c.taker_buy_volume),
        format_quote(c.taker_buy_quote_volume),
        "0",
    ]


def from_row(row: Sequence[Any]) -> Candle:
    """A kline array (12 fields; the ignored last one may be missing) as a Candle."""
    if len(row) < 11:
        raise ValueError(f"kline row has {len(row)} fields, expected 12: {row!r}")
    return Candle(
        open_ms=int(row[0]),
        close_ms=int(row[6]),
        open=to_units(row[1]),
        high=to_units(row[2]),
        low=to_units(row[3]),
        close=to_units(row[4]),
        volume=to_units(row[5]),
        quote_volume=quote_to_units(row[7]),
        trades=int(row[8]),
        taker_buy_volume=to_units(row[9]),
        taker_buy_quote_volume=quote_to_units(row[10]),
    )


def to_live(c: Candle) -> dict[str, Any]:
    """The candle fields of a ``live_candle`` value."""
    return {
        "time": c.open_ms,
        "close_time": c.close_ms,
        "open": format_units(c.open),
        "high": format_units(c.high),
        "low": format_units(c.low),
        "close": format_units(c.close),
        "volume": format_units(c.volume),
        "quote_volume": format_quote(c.quote_volume),
        "trades": c.trades,
        "taker_buy_volume": format_units(c.taker_buy_volume),
        "taker_buy_quote_volume": format_quote(c.taker_buy_quote_volume),
    }


def live_row(fields: Mapping[str, Any]) -> list[Any]:
    """The candle fields of a live JSON value as Binance's 12-field kline array; a
    missing volume, close time or count reads as zero (the close time as ``time``)."""
    return [
        fields["time"],
        fields["open"],
        fields["high"],
        fields["low"],
        fields["close"],
        fields.get("volume", ZERO),
        fields.get("close_time", fields["time"]),
        fields.get("quote_volume", ZERO),
        fields.get("trades", 0),
        fields.get("taker_buy_volume", ZERO),
        fields.get("taker_buy_quote_volume", ZERO),
        "0",
    ]


def from_live(fields: Mapping[str, Any]) -> Candle:
    """The candle of a live JSON value (its other keys are ignored)."""
    return from_row(live_row(fields))


def live_value(
    symbol: str,
    interval: str,
    forming: Candle,
    complete: bool,
    previous: Candle | None,
    previous_complete: bool,
    now_ms: int,
) -> dict[str, Any]:
    """The ``live_candle`` JSON (DESIGN.md section 2): the forming candle, flagged
    incomplete, and the just-closed one, unconfirmed until its official candle is stored."""
    value: dict[str, Any] = {
        "symbol": symbol,
        "interval": interval,
        **to_live(forming),
        "is_incomplete": True,
        "source": "live",
        "complete": complete,
        "updated_ms": now_ms,
        "previous": None,
    }
    if previous is not None:
        value["previous"] = closed_value(previous, previous_complete)
    return value


def closed_value(candle: Candle, complete: bool) -> dict[str, Any]:
    """A closed live candle: final, but not confirmed until its official one is stored."""
    return {
        **to_live(candle),
        "is_incomplete": False,
        "confirmed": False,
        "source": "live",
        "complete": complete,
    }


def encode_live(
    symbol: str,
    interval: str,
    forming: Candle,
    complete: bool,
    previous: msgspec.Raw | None,
    now_ms: int,
) -> bytes:
    """``live_value`` as JSON bytes, its ``previous`` given already encoded (by
    ``encode_closed``): the live writer encodes a just-closed candle once per close, not
    once per write. The same bytes as encoding ``live_value``."""
    return _enc.encode(
        {
            "symbol": symbol,
            "interval": interval,
            "time": forming.open_ms,
            "close_time": forming.close_ms,
            "open": format_units(forming.open),
            "high": format_units(forming.high),
            "low": format_units(forming.low),
            "close": format_units(forming.close),
            "volume": format_units(forming.volume),
            "quote_volume": format_quote(forming.quote_volume),
            "trades": forming.trades,
            "taker_buy_volume": format_units(forming.taker_buy_volume),
            "taker_buy_quote_volume": format_quote(forming.taker_buy_quote_volume),
            "is_incomplete": True,
            "source": "live",
            "complete": complete,
            "updated_ms": now_ms,
            "previous": previous,
        }
    )


def encode_closed(candle: Candle, complete: bool) -> bytes:
    """``closed_value`` as JSON bytes."""
    return _enc.encode(closed_value(candle, complete))
