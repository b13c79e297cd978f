"""Ohlcv: the one candle arithmetic (DESIGN.md section 3), on named fields.

The sums of some trades of one period, without its times: open = first price, close =
last, high/low = max/min, volume = sum of quantities, quote volume = sum of price x
quantity (1e-16 units), trades = sum of aggTrade counts, taker-buy volumes over trades
whose buyer is not the maker. The live aggregator, the archive parser and the stitching
of archive parts all accumulate with it; the emulator keeps its own arithmetic on
purpose (an independent oracle).

Mutable and slotted: adding a trade changes fields in place (no allocation per trade),
attribute access costs about what list indexing does.
"""

from __future__ import annotations

from livecandle.domain.model import Candle


class Ohlcv:
    """Open, high, low, close, volumes and trade count of consecutive trades."""

    __slots__ = (
        "close",
        "high",
        "low",
        "open",
        "quote_volume",
        "taker_buy_quote_volume",
        "taker_buy_volume",
        "trades",
        "volume",
    )

    def __init__(
        self,
        open: int,
        high: int,
        low: int,
        close: int,
        volume: int = 0,
        quote_volume: int = 0,
        trades: int = 0,
        taker_buy_volume: int = 0,
        taker_buy_quote_volume: int = 0,
    ) -> None:
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.quote_volume = quote_volume
        self.trades = trades
        self.taker_buy_volume = taker_buy_volume
        self.taker_buy_quote_volume = taker_buy_quote_volume

    @classmethod
    def of_trade(cls, price: int, qty: int, count: int, maker: bool) -> Ohlcv:
        """One (aggregate) trade of ``count`` trades; ``maker``: the buyer was the maker
        (Binance's ``m``), so the taker sold and the taker-buy volumes stay zero."""
        quote = price * qty
        if maker:
            return cls(price, price, price, price, qty, quote, count)
        return cls(price, price, price, price, qty, quote, count, qty, quote)

    @classmethod
    def of_candle(cls, c: Candle) -> Ohlcv:
        return cls(
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.quote_volume,
            c.trades,
            c.taker_buy_volume,
            c.taker_buy_quote_volume,
        )

    def add_trade(self, price: int, qty: int, count: int, maker: bool) -> None:
        """The next trade in time order."""
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        quote = price * qty
        self.volume += qty
        self.quote_volume += quote
        self.trades += count
        if not maker:
            self.taker_buy_volume += qty
            self.taker_buy_quote_volume += quote

    def merge(self, later: Ohlcv) -> None:
        """Add the trades of ``later``, which all come after these."""
        if later.high > self.high:
            self.high = later.high
        if later.low < self.low:
            self.low = later.low
        self.close = later.close
        self.volume += later.volume
        self.quote_volume += later.quote_volume
        self.trades += later.trades
        self.taker_buy_volume += later.taker_buy_volume
        self.taker_buy_quote_volume += later.taker_buy_quote_volume

    def then(self, later: Ohlcv) -> Ohlcv:
        """A new Ohlcv of these trades and then ``later``'s (neither changes)."""
        return Ohlcv(
            self.open,
            later.high if later.high > self.high else self.high,
            later.low if later.low < self.low else self.low,
            later.close,
            self.volume + later.volume,
            self.quote_volume + later.quote_volume,
            self.trades + later.trades,
            self.taker_buy_volume + later.taker_buy_volume,
            self.taker_buy_quote_volume + later.taker_buy_quote_volume,
        )

    def copy(self) -> Ohlcv:
        return Ohlcv(*self._fields())

    def to_candle(self, open_ms: int, close_ms: int) -> Candle:
        return Candle(open_ms, close_ms, *self._fields())

    def _fields(self) -> tuple[int, ...]:
        return (
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote_volume,
            self.trades,
            self.taker_buy_volume,
            self.taker_buy_quote_volume,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ohlcv):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Ohlcv{self._fields()}"
