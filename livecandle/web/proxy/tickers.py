"""Binance's tickers from livecandle's own data: ``ticker/24hr`` and ``ticker`` (rolling
window, FULL or MINI) and ``avgPrice``, computed from the stored 1m candles (official,
then live) and the live price, in exact integer units, formatted as Binance prints them
(8 decimals; ``priceChangePercent`` 3).

Windows start on a minute (the data's unit): ``openTime`` = the minute ``windowSize``
before the current one, ``closeTime`` = now, as Binance's rolling ``ticker`` does; for
``ticker/24hr`` this is up to 59.999 s wider than Binance's exact 24 h. livecandle keeps
no trade ids: ``firstId``/``lastId`` are -1 and ``lastQty`` is 0. Best bid/ask (FULL
24hr only) come from ``book`` (the order book's, or the exchange's bookTicker forwarded).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from livecandle.domain.intervals import DAY_MS, HOUR_MS, MINUTE_MS, parse_interval
from livecandle.domain.model import Candle, SeriesKey, format_quote, format_units, to_units
from livecandle.exchange.binance import params as bp
from livecandle.store import Store
from livecandle.store.codec import from_live, from_row
from livecandle.web.candles import live_parts

ONE_MINUTE = parse_interval("1m")
ONE_HOUR = parse_interval("1h")
BookFn = Callable[[Sequence[str]], Awaitable[Mapping[str, Sequence[str]]]]
_WINDOW_RE = re.compile(r"([0-9]{1,2})([mhd])")
_NO_BOOK = ("0.00000000", "0.00000000", "0.00000000", "0.00000000")


def window_ms(text: str) -> int:
    """``windowSize``: ``1m``..``59m``, ``1h``..``23h``, ``1d``..``7d``."""
    m = _WINDOW_RE.fullmatch(text)
    limits = {"m": (59, MINUTE_MS), "h": (23, HOUR_MS), "d": (7, DAY_MS)}
    if m is not None:
        n, (top, unit) = int(m.group(1)), limits[m.group(2)]
        if 1 <= n <= top:
            return n * unit
    raise bp.BinanceParamError(-1100, "Illegal characters found in parameter 'windowSize'.")


def ticker_type(q: Mapping[str, str]) -> str:
    kind = q.get("type", "FULL")
    if kind not in ("FULL", "MINI"):
        raise bp.BinanceParamError(-1139, "Invalid ticker type.")
    return kind


def percent(change: int, opened: int) -> str:
    """``change / opened`` in percent, 3 decimals, half away from zero."""
    if opened == 0:
        return "0.000"
    q, r = divmod(abs(change) * 100_000, opened)
    if 2 * r >= opened:
        q += 1
    sign = "-" if change < 0 and q else ""
    return f"{sign}{q // 1000}.{q % 1000:03d}"


def average(quote: int, volume: int) -> int:
    """quote (1e-16 units) / volume (1e-8 units), in 1e-8 units, truncated."""
    return quote // volume if volume else 0


@dataclass(frozen=True, slots=True)
class Window:
    symbol: str
    open_ms: int
    close_ms: int
    candles: list[Candle]
    last: int  # last price, 1e-8 units
    last_ms: int  # time of the last trade, when known (else the close time)

    @property
    def volume(self) -> int:  # empty candles add nothing
        return sum(c.volume for c in self.candles)

    @property
    def quote(self) -> int:
        return sum(c.quote_volume for c in self.candles)

    def fields(self, kind: str, full_24hr: bool, book: Sequence[str] | None) -> dict[str, Any]:
        cs = [c for c in self.candles if c.trades]  # an empty candle's prices are a carry
        opened = cs[0].open if cs else self.last
        high = max((c.high for c in cs), default=self.last)
        low = min((c.low for c in cs), default=self.last)
        volume, quote = self.volume, self.quote
        out: dict[str, Any] = {"symbol": self.symbol}
        if kind == "FULL":
            change = self.last - opened
            out["priceChange"] = format_units(change)
            out["priceChangePercent"] = percent(change, opened)
            out["weightedAvgPrice"] = format_units(average(quote, volume))
            if full_24hr:
                out["prevClosePrice"] = format_units(opened)
                out["lastPrice"] = format_units(self.last)
                out["lastQty"] = "0.00000000"
                bid, bid_qty, ask, ask_qty = book or _NO_BOOK
                out.update(bidPrice=bid, bidQty=bid_qty, askPrice=ask, askQty=ask_qty)
        out["openPrice"] = format_units(opened)
        out["highPrice"] = format_units(high)
        out["lowPrice"] = format_units(low)
        if "lastPrice" not in out:
            out["lastPrice"] = format_units(self.last)
        out["volume"] = format_units(volume)
        out["quoteVolume"] = format_quote(quote)
        out["openTime"] = self.open_ms
        out["closeTime"] = self.close_ms
        out["firstId"] = -1
        out["lastId"] = -1
        out["count"] = sum(c.trades for c in cs)
        return out


class LocalTickers:
    """Windows of the followed symbols' candles, read from Redis: 1m candles, and for
    the whole hours inside a long window the official 1h candles when ``hourly`` (1h
    served): a 24 h window is ~23 + 120 rows instead of 1,440."""

    def __init__(self, store: Store, now_ms: Callable[[], int], hourly: bool = False) -> None:
        self.store = store
        self.now_ms = now_ms
        self.hourly = hourly

    async def _minutes(self, symbol: str, lo: int, hi: int) -> list[Candle]:
        """1m candles opening in ``[lo, hi]``: official, then live."""
        read = await self.store.read_chart(
            SeriesKey(symbol, ONE_MINUTE), lo, hi, (hi - lo) // MINUTE_MS + 2
        )
        candles = [from_row(msgspec.json.decode(m)) for m in read.members or []]
        candles += [from_live(c) for c in live_parts(read.live, read.latest, read.closed)]
        return [c for c in candles if lo <= c.open_ms <= hi]

    async def _candles(self, symbol: str, start: int, now: int) -> list[Candle]:
        h0, h1 = -(-start // HOUR_MS) * HOUR_MS, now // HOUR_MS * HOUR_MS
        if self.hourly and h1 - h0 >= 2 * HOUR_MS:
            read = await self.store.read_chart(
                SeriesKey(symbol, ONE_HOUR), h0, h1 - 1, (h1 - h0) // HOUR_MS + 1
            )
            hours = [from_row(msgspec.json.decode(m)) for m in read.members or []]
            if [c.open_ms for c in hours] == list(range(h0, h1, HOUR_MS)):
                head = await self._minutes(symbol, start, h0 - 1)
                return head + hours + await self._minutes(symbol, h1, now)
            # an hour not stored yet (just closed): the minutes say it all
        return await self._minutes(symbol, start, now)

    def start_ms(self, width_ms: int, now: int | None = None) -> int:
        """Where the window of ``width_ms`` ending now (or at ``now``) starts."""
        now = self.now_ms() if now is None else now
        return now // MINUTE_MS * MINUTE_MS - width_ms

    async def window(self, symbol: str, width_ms: int) -> Window | None:
        """The candles of the window ending now; None when none is stored."""
        now = self.now_ms()
        start = self.start_ms(width_ms, now)
        candles = await self._candles(symbol, start, now)
        if not candles or candles[0].open_ms > start:
            return None  # Redis does not hold the whole window: the exchange answers
        last, last_ms = candles[-1].close, now
        raw = await self.store.live_price(symbol)
        if raw is not None:
            try:
                value = msgspec.json.decode(raw)
                last = to_units(value["price"])
                last_ms = int(value.get("time") or now)
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                pass
        return Window(symbol, start, now, candles, last, last_ms)

    async def avg_price(self, symbol: str) -> dict[str, Any] | None:
        """``avgPrice``: the volume-weighted price of the last 5 minutes' trades (the
        forming minute and the 4 before it); the last price when none traded."""
        w = await self.window(symbol, 4 * MINUTE_MS)
        if w is None:
            return None
        price = average(w.quote, w.volume) if w.volume else w.last
        return {"mins": 5, "price": format_units(price), "closeTime": w.last_ms}
