"""The body of ``POST /save-live-candle``: one live candle as JSON, checked field by
field (prices as decimal strings, never floats) into a ``Candle``, every number within
what clients can parse (``trades`` an int64, amounts at most ``MAX_WHOLE_DIGITS``
integer digits)."""

from __future__ import annotations

from typing import Any

from livecandle.domain.intervals import Interval
from livecandle.domain.model import SCALE, Candle, DecimalError, to_units
from livecandle.web.errors import ApiError, shown_repr
from livecandle.web.params import MAX_TIME_MS

MAX_BODY = 4096
MAX_TRADES = 2**63 - 1  # clients read the count as a signed 64-bit integer
# an amount (price, volume, quote volume) below 10**20: far above any market's, and a
# bound a client's decimal type holds (Binance's own amounts are well under it)
MAX_WHOLE_DIGITS = 20
MAX_AMOUNT_UNITS = 10**MAX_WHOLE_DIGITS * SCALE - 1


def _amount(name: str, value: Any) -> int:
    """A decimal string as 1e-8 units, refused (naming the field) when it is not one
    or when it has more than ``MAX_WHOLE_DIGITS`` integer digits."""
    if not isinstance(value, str):
        raise ApiError(
            400,
            name,
            value,
            f'{name} must be a decimal string like "45120.50", got {type(value).__name__}',
        )
    whole = value.partition(".")[0].lstrip("0")
    if len(whole) > MAX_WHOLE_DIGITS:  # checked before reading: no 4,000-digit int()
        raise ApiError(
            400,
            name,
            value,
            f"{name}={shown_repr(value)} has {len(whole)} integer digits "
            f"(at most {MAX_WHOLE_DIGITS})",
        )
    try:
        units = to_units(value)
    except DecimalError as e:
        why = str(e).removeprefix(repr(value)).strip()
        raise ApiError(400, name, value, f"{name}={shown_repr(value)}: {why}") from None
    if units > MAX_AMOUNT_UNITS:
        raise ApiError(
            400, name, value, f"{name}={shown_repr(value)} is not below 10^{MAX_WHOLE_DIGITS}"
        )
    return units


def text_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, name, value, f"{name} must be a string, got {type(value).__name__}")
    return value


def candle_from_body(body: dict[str, Any], interval: Interval) -> Candle:
    known = {
        "symbol",
        "interval",
        "time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "is_incomplete",
        "source",
        "close_time",
    }
    for name in body:
        if name not in known:
            raise ApiError(400, name, body[name], f"unknown field {shown_repr(name)}")
    t = body.get("time")
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= MAX_TIME_MS:
        raise ApiError(
            400, "time", t, f"time must be the open time in ms (an integer, 0 to {MAX_TIME_MS})"
        )
    if not interval.is_aligned(t):
        raise ApiError(
            400,
            "time",
            t,
            f"time={t} is not a {interval.name} open time (nearest: {interval.open_of(t)})",
        )
    close_time = body.get("close_time", interval.close_of(t))
    if close_time != interval.close_of(t) or isinstance(close_time, bool):
        raise ApiError(
            400,
            "close_time",
            close_time,
            f"close_time must be {interval.close_of(t)} (the {interval.name} candle's last ms)",
        )
    if body.get("is_incomplete", True) is not True:
        raise ApiError(
            400,
            "is_incomplete",
            body.get("is_incomplete"),
            "a live candle is incomplete (is_incomplete must be true)",
        )
    if body.get("source", "live") != "live":
        raise ApiError(400, "source", body.get("source"), "source must be 'live'")
    units: dict[str, int] = {}
    for name in ("open", "high", "low", "close", "volume", "taker_buy_volume"):
        units[name] = _amount(
            name, body.get(name, "0" if name in ("volume", "taker_buy_volume") else None)
        )
    quotes: dict[str, int] = {}
    for name in ("quote_volume", "taker_buy_quote_volume"):
        quotes[name] = _amount(name, body.get(name, "0")) * 10**8  # 1e-16 units
    trades = body.get("trades", 0)
    if not isinstance(trades, int) or isinstance(trades, bool) or not 0 <= trades <= MAX_TRADES:
        raise ApiError(400, "trades", trades, f"trades must be an integer from 0 to {MAX_TRADES}")
    o, h, lo, c = units["open"], units["high"], units["low"], units["close"]
    if not (lo <= o <= h and lo <= c <= h):
        bad = "low" if lo > min(o, c) else "high"
        raise ApiError(400, bad, body[bad], "prices break low <= open, close <= high")
    return Candle(
        t,
        interval.close_of(t),
        o,
        h,
        lo,
        c,
        units["volume"],
        quotes["quote_volume"],
        trades,
        units["taker_buy_volume"],
        quotes["taker_buy_quote_volume"],
    )
