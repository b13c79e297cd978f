"""The emulator's tickers: ``ticker/24hr``, ``ticker`` (rolling window), ``ticker/price``
and ``avgPrice``, from its own trades, in Binance's shapes and weights.

A window's aggregate is its partial minutes' trades plus whole closed minutes and hours,
each computed once and kept (closed ones never change), and the merged closed part is
kept for the minute: the whole market's (1,600 symbols) 24 h tickers take about 0.4 s
once the day's history is made (the first asking makes it: some 10 s, as klines would). The rolling
``ticker`` opens on a minute, as Binance's does; ``ticker/24hr`` opens exactly 24 h ago.
Best bid/ask: one tick either side of the last price (the emulator keeps no book here).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from livecandle.domain.intervals import DAY_MS, HOUR_MS, MINUTE_MS
from livecandle.domain.model import format_quote, format_units
from livecandle.emulator.market import TICK, SymbolMarket
from livecandle.emulator.tape import Agg, agg_merge
from livecandle.exchange.binance import params as bp

MAX_KEPT = 400  # closed minutes/hours kept per symbol before starting over
_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK")


def weight(endpoint: str, q: Mapping[str, str]) -> int:
    """Binance's weight (binance-proxy-endpoints.md section 2)."""
    n = 1 if "symbol" in q else None
    if "symbols" in q:
        n = q["symbols"].count(",") + 1
    if endpoint == "ticker/24hr":
        return 80 if n is None else 2 if n <= 20 else 40 if n <= 100 else 80
    if endpoint == "ticker/price":
        return 2 if "symbol" in q else 4
    if endpoint == "ticker":
        return min(4 * (n or 1), 200)
    return 2  # avgPrice


def _percent(change: int, opened: int) -> str:
    if opened == 0:
        return "0.000"
    q, r = divmod(abs(change) * 100_000, opened)
    if 2 * r >= opened:
        q += 1
    return f"{'-' if change < 0 and q else ''}{q // 1000}.{q % 1000:03d}"


def _window(text: str) -> int:
    units = {"m": (59, MINUTE_MS), "h": (23, HOUR_MS), "d": (7, DAY_MS)}
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in units:
        top, unit = units[text[-1]]
        if 1 <= int(text[:-1]) <= top:
            return int(text[:-1]) * unit
    raise bp.BinanceParamError(-1100, "Illegal characters found in parameter 'windowSize'.")


class Tickers:
    def __init__(self) -> None:
        self._kept: dict[str, dict[tuple[int, int], Agg | None]] = {}
        # the newest window's closed part, by symbol: ((first, end), aggregate)
        self._merged: dict[str, tuple[tuple[int, int], Agg | None]] = {}

    def _closed(self, sm: SymbolMarket, bounds: list[int]) -> Agg | None:
        """The merged aggregates of the closed bins ``bounds`` cut (ascending); the
        bins not kept yet that lie in the history are computed in one pass."""
        kept = self._kept.setdefault(sm.symbol, {})
        bins = list(itertools.pairwise(bounds))
        if len(kept) + len(bins) > MAX_KEPT:
            kept.clear()
        todo = [i for i, key in enumerate(bins) if key not in kept]
        if todo:
            live = sm.live_start_ms
            history = [i for i in todo if bins[i][1] <= live]
            if history:
                lo, hi = history[0], history[-1]
                cut = [bins[i][0] for i in range(lo, hi + 1)] + [bins[hi][1]]
                for i, made in zip(range(lo, hi + 1), sm.history_aggs(cut), strict=True):
                    kept[bins[i]] = made
            for i in todo:
                if bins[i] not in kept:
                    kept[bins[i]] = sm.range_agg(*bins[i])
        merged: Agg | None = None
        for key in bins:
            merged = agg_merge(merged, kept[key])
        return merged

    def window_agg(self, sm: SymbolMarket, a: int, b: int) -> Agg | None:
        """Every trade in ``[a, b)`` (``b`` at most just past now)."""
        m0, m1 = -(-a // MINUTE_MS) * MINUTE_MS, b // MINUTE_MS * MINUTE_MS
        if m1 <= m0:
            return sm.range_agg(a, b)
        h0, h1 = -(-m0 // HOUR_MS) * HOUR_MS, m1 // HOUR_MS * HOUR_MS
        if h1 > h0:
            bounds = [*range(m0, h0, MINUTE_MS), *range(h0, h1 + 1, HOUR_MS)]
            bounds += range(h1 + MINUTE_MS, m1 + 1, MINUTE_MS)
        else:
            bounds = list(range(m0, m1 + 1, MINUTE_MS))
        merged = self._merged.get(sm.symbol)
        if merged is None or merged[0] != (m0, m1):  # once a minute per window
            merged = self._merged[sm.symbol] = ((m0, m1), self._closed(sm, bounds))
        agg = agg_merge(sm.range_agg(a, m0), merged[1])
        return agg_merge(agg, sm.range_agg(m1, b))

    def _last_trade(self, sm: SymbolMarket, now: int) -> tuple[int, int, int] | None:
        """(price, qty, time) of the newest trade."""
        for t in sm.trades_from_id(sm.last_agg_id):
            return t[1], t[2], t[5]
        price = sm.last_price_before(now + 1)
        return None if price is None else (price, 0, now)

    def ticker(
        self, sm: SymbolMarket, now: int, width_ms: int, kind: str, full_24hr: bool
    ) -> dict[str, Any]:
        a = now - width_ms if full_24hr else now // MINUTE_MS * MINUTE_MS - width_ms
        agg = self.window_agg(sm, a, now + 1)
        last = self._last_trade(sm, now)
        last_price = last[0] if last else 0
        prev = sm.last_price_before(a)
        opened = agg[0] if agg else last_price
        high, low = (agg[1], agg[2]) if agg else (last_price, last_price)
        volume, quote = (agg[4], agg[5]) if agg else (0, 0)
        out: dict[str, Any] = {"symbol": sm.symbol}
        if kind == "FULL":
            out["priceChange"] = format_units(last_price - opened)
            out["priceChangePercent"] = _percent(last_price - opened, opened)
            out["weightedAvgPrice"] = format_units(quote // volume if volume else 0)
            if full_24hr:
                out["prevClosePrice"] = format_units(prev if prev is not None else opened)
                out["lastPrice"] = format_units(last_price)
                out["lastQty"] = format_units(last[1] if last else 0)
                out["bidPrice"] = format_units(max(0, last_price - TICK))
                out["bidQty"] = format_units(1_000_000)
                out["askPrice"] = format_units(last_price + TICK)
                out["askQty"] = format_units(1_000_000)
        out["openPrice"] = format_units(opened)
        out["highPrice"] = format_units(high)
        out["lowPrice"] = format_units(low)
        out["lastPrice"] = format_units(last_price)
        out["volume"] = format_units(volume)
        out["quoteVolume"] = format_quote(quote)
        out["openTime"] = a
        out["closeTime"] = now
        out["firstId"] = agg[9] if agg else -1
        out["lastId"] = agg[10] if agg else -1
        out["count"] = agg[6] if agg else 0
        return out

    def answer(
        self,
        endpoint: str,
        q: Mapping[str, str],
        symbols: Mapping[str, SymbolMarket],
        statuses: Mapping[str, str],
        now: int,
    ) -> Any:
        if endpoint == "avgPrice":
            bp.only(q, ("symbol",))
            sm = symbols[bp.symbol_param(q, symbols)]
            agg = self.window_agg(sm, now - 5 * MINUTE_MS, now + 1)
            last = self._last_trade(sm, now)
            price = agg[5] // agg[4] if agg and agg[4] else (last[0] if last else 0)
            return {"mins": 5, "price": format_units(price), "closeTime": last[2] if last else now}
        rolling = endpoint == "ticker"
        allowed = ["symbol", "symbols", "symbolStatus"]
        if endpoint != "ticker/price":
            allowed.append("type")
        if rolling:
            allowed.append("windowSize")
        bp.only(q, allowed)
        kind = q.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise bp.BinanceParamError(-1139, "Invalid ticker type.")
        if rolling and "symbol" not in q and "symbols" not in q:
            bp.mandatory(q, "symbol")
        names = bp.symbols_param(q, symbols)
        if len(set(names)) != len(names):
            raise bp.BinanceParamError(-1151, "Symbol is present multiple times in the list.")
        if rolling and len(names) > 100:
            raise bp.BinanceParamError(
                -1101, "Too many values sent for parameter 'symbols', maximum allowed up to 100."
            )
        wanted = q.get("symbolStatus")
        if wanted is not None:
            if wanted not in _STATUSES:
                raise bp.BinanceParamError(-1122, "Invalid symbolStatus.")
            if "symbol" in q and statuses.get(names[0]) != wanted:
                raise bp.BinanceParamError(
                    -1220, "The symbol's status does not match the requested symbolStatus."
                )
            names = [n for n in names if statuses.get(n) == wanted]
        if endpoint == "ticker/price":
            out: list[dict[str, Any]] = []
            for n in names:
                last = self._last_trade(symbols[n], now)
                out.append({"symbol": n, "price": format_units(last[0] if last else 0)})
        else:
            width = _window(q.get("windowSize", "1d")) if rolling else DAY_MS
            out = [self.ticker(symbols[n], now, width, kind, not rolling) for n in names]
        return out[0] if "symbol" in q else out
