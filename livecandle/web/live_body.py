"""The body of ``POST /save-live-candle``: one live candle as JSON, checked field by
field (prices as decimal strings, never floats) into a ``Candle``."""

from __future__ import annotations

from typing import Any

from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle, DecimalError, to_units
from livecandle.web.errors import ApiError
from livecandle.web.params import MAX_TIME_MS

MAX_BODY = 4096


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
            raise ApiError(400, name, body[name], f"unknown field {name!r}")
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
        value = body.get(name, "0" if name in ("volume", "taker_buy_volume") else None)
        if not isinstance(value, str):
            raise ApiError(
                400,
                name,
                value,
                f'{name} must be a decimal string like "45120.50", got {type(value).__name__}',
            )
        try:
            units[name] = to_units(value)
        except DecimalError as e:
            raise ApiError(400, name, value, f"{name}: {e}") from None
    quotes: dict[str, int] = {}
    for name in ("quote_volume", "taker_buy_quote_volume"):
        value = body.get(name, "0")
        if not isinstance(value, str):
            raise ApiError(400, name, value, f"{name} must be a decimal string")
        try:
            quotes[name] = to_units(value) * 10**8
        except DecimalError as e:
            raise ApiError(400, name, value, f"{name}: {e}") from None
    trades = body.get("trades", 0)
    if not isinstance(trades, int) or isinstance(trades, bool) or trades < 0:
        raise ApiError(400, "trades", trades, "trades must be a non-negative integer")
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
