"""Domain types: exact decimal units, trades, candles and series keys.

Prices and quantities are ``int`` counts of 1e-8 (Binance sends every spot amount with
8 decimals); products of price and quantity (quote volumes) are kept exact at 1e-16 and
rendered with 8 decimals only when they leave the process. No float ever touches money.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from livecandle.domain.intervals import Interval, parse_interval

DECIMALS: Final = 8
SCALE: Final = 10**DECIMALS

_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,20}")
_DECIMAL_RE: Final = re.compile(r"([0-9]+)(?:\.([0-9]*))?")


class DecimalError(ValueError):
    """A text is not a non-negative decimal with at most 8 fractional digits."""


def to_units(text: str) -> int:
    """``"60759.60000000"`` -> 6075960000000 (count of 1e-8). Exact or raises DecimalError."""
    if len(text) > 9 and text[-9] == ".":  # Binance's own form: exactly 8 decimals
        digits = text.replace(".", "", 1)
        if digits.isascii() and digits.isdigit():
            return int(digits)
    m = _DECIMAL_RE.fullmatch(text)
    if m is None:
        raise DecimalError(f"{text!r} is not a decimal number")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > DECIMALS:
        if frac[DECIMALS:].strip("0"):
            raise DecimalError(f"{text!r} has more than {DECIMALS} decimals")
        frac = frac[:DECIMALS]
    return int(whole) * SCALE + int(frac.ljust(DECIMALS, "0") or "0")


def format_units(units: int) -> str:
    """6075960000000 -> ``"60759.60000000"``."""
    if units >= 0:  # the common case, about a third faster than divmod (the live path
        # formats ~10 amounts per candle per write); %-format beats the f-string here
        digits = "%09d" % units  # noqa: UP031
        return digits[:-8] + "." + digits[-8:]
    sign = "-"
    whole, frac = divmod(abs(units), SCALE)
    return f"{sign}{whole}.{frac:08d}"


def format_quote(quote_units: int) -> str:
    """A 1e-16 quote amount rendered with 8 decimals, rounding half to even.

    Binance shows quote volumes with 8 decimals; for ordinary spot markets (price tick times
    quantity step at or above 1e-8) the sum is already exact at 8 decimals and nothing rounds.
    """
    q, r = divmod(quote_units, SCALE)
    if r * 2 > SCALE or (r * 2 == SCALE and q % 2):
        q += 1
    return format_units(q)


def quote_to_units(text: str) -> int:
    """An 8-decimal quote amount as 1e-16 units."""
    return to_units(text) * SCALE


def validate_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise ValueError(f"symbol {symbol!r} is not an upper-case Binance symbol like BTCUSDT")
    return symbol


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A symbol and an interval; canonical text ``BTCUSDT:1m``."""

    symbol: str
    interval: Interval

    @classmethod
    def of(cls, symbol: str, interval: str) -> SeriesKey:
        return cls(validate_symbol(symbol), parse_interval(interval))

    @classmethod
    def parse(cls, text: str) -> SeriesKey:
        symbol, _, interval = text.partition(":")
        return cls.of(symbol, interval)

    def __str__(self) -> str:
        return f"{self.symbol}:{self.interval.name}"


@dataclass(frozen=True, slots=True)
class Trade:
    """One aggregate trade (Binance aggTrade), amounts in 1e-8 units."""

    agg_id: int
    price: int
    quantity: int
    first_id: int
    last_id: int
    time_ms: int
    buyer_is_maker: bool

    @property
    def count(self) -> int:
        """Number of individual trades this aggTrade stands for."""
        return self.last_id - self.first_id + 1

    @property
    def is_valid(self) -> bool:
        """False for the placeholders of Binance's 2022 audit (p = q = 0, f = -1)."""
        return not ((self.price == 0 and self.quantity == 0) or self.first_id < 0)


@dataclass(slots=True)
class Candle:
    """One candle. Prices/volumes in 1e-8 units; quote volumes in 1e-16 units."""

    open_ms: int
    close_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote_volume: int = 0
    trades: int = 0
    taker_buy_volume: int = 0
    taker_buy_quote_volume: int = 0

    def __post_init__(self) -> None:
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise ValueError(
                f"candle at {self.open_ms} breaks low <= open, close <= high: "
                f"o={self.open} h={self.high} l={self.low} c={self.close}"
            )

    @classmethod
    def empty(cls, open_ms: int, close_ms: int, price: int) -> Candle:
        """A candle without trades: OHLC at ``price`` (the previous close), volumes zero."""
        return cls(open_ms, close_ms, price, price, price, price)
