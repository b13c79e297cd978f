"""Tickers: last price, 24 h change and 24 h quote volume of every served symbol
(``GET /api/tickers``), for the page's search and market overview.

The 24 h figures come from stored official candles of one interval: the coarsest served
one of at most an hour (``1h`` when served), so the window is exact to that interval
(the answer says which). The last price is the live one (``live_price``), else the newest
close. Every symbol costs one pipelined round trip, and the answer is kept ``ttl_s`` so
many overview pages cost one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from livecandle.domain.intervals import DAY_MS, HOUR_MS, Interval
from livecandle.domain.model import SeriesKey
from livecandle.store import Store

# longest first: "FDUSD" before "USD", "USDT" before "USD"
QUOTES = (
    "FDUSD",
    "USDT",
    "USDC",
    "TUSD",
    "BUSD",
    "BTC",
    "ETH",
    "BNB",
    "TRY",
    "EUR",
    "BRL",
    "JPY",
    "DAI",
    "XRP",
    "DOGE",
    "USD",
)
_enc = msgspec.json.Encoder()


def quote_of(symbol: str) -> str:
    """The quote asset of a Binance symbol name (``ETHBTC`` -> ``BTC``)."""
    for q in QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return q
    return "other"


def window_interval(intervals: Sequence[Interval]) -> Interval | None:
    """The coarsest fixed interval of at most an hour: the 24 h window's unit."""
    fit = [i for i in intervals if 0 < i.length_ms <= HOUR_MS]
    return max(fit, key=lambda i: i.length_ms) if fit else None


def _plain(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return text if text != "-0" else "0"


class Tickers:
    def __init__(
        self,
        store: Store,
        symbols: Callable[[], Sequence[str]],
        intervals: Sequence[Interval],
        now_ms: Callable[[], int],
        ttl_s: float = 2.0,
    ) -> None:
        self.store = store
        self.symbols = symbols
        self.interval = window_interval(intervals)
        self.now_ms = now_ms
        self.ttl_s = ttl_s
        self._body: bytes | None = None
        self._at_s = 0.0
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        async with self._lock:  # concurrent readers share one computation
            if self._body is None or time.monotonic() - self._at_s > self.ttl_s:
                self._body = _enc.encode(await self.compute())
                self._at_s = time.monotonic()
            return self._body

    async def compute(self) -> dict[str, Any]:
        """``{time, interval, window_ms, tickers: [{symbol, quote, last, open, change,
        change_pct, quote_volume}]}``; figures are decimal strings (None when unknown)."""
        names = list(self.symbols())
        now = self.now_ms()
        since = now - DAY_MS
        windows: list[list[bytes]] = [[] for _ in names]
        iv = self.interval
        if iv is not None and names:
            windows = await self.store.members_since([SeriesKey(n, iv) for n in names], since)
        prices = await self.store.live_prices(names)
        # the exchange's own quote assets where the universe is known (patterns)
        quotes = {s: e.quote for s, e in (await self.store.universe()).items() if e.quote}
        out = []
        for name, rows, price in zip(names, windows, prices, strict=True):
            out.append(self._ticker(name, rows, price, quotes.get(name)))
        return {
            "time": now,
            "interval": iv.name if iv else None,
            "window_ms": DAY_MS,
            "tickers": out,
        }

    @staticmethod
    def _ticker(
        name: str, rows: list[bytes], price: bytes | None, quote: str | None = None
    ) -> dict[str, Any]:
        opened: Decimal | None = None
        close: Decimal | None = None
        volume = Decimal(0)
        for raw in rows:
            row = msgspec.json.decode(raw)
            if opened is None:
                opened = Decimal(row[1])
            close = Decimal(row[4])
            volume += Decimal(row[7])
        last = close
        if price is not None:
            with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError, ArithmeticError):
                last = Decimal(msgspec.json.decode(price)["price"])
        change = None if last is None or opened is None else last - opened
        pct = None
        if change is not None and opened:
            pct = format((change * 100 / opened).quantize(Decimal("0.01")), "f")
        return {
            "symbol": name,
            "quote": quote or quote_of(name),
            "last": None if last is None else _plain(last),
            "open": None if opened is None else _plain(opened),
            "change": None if change is None else _plain(change),
            "change_pct": pct,
            "quote_volume": _plain(volume) if rows else None,
        }
