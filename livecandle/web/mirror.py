"""Mirror: the Binance-compatible endpoints (``/api/v3/klines``, ``uiKlines``,
``exchangeInfo``, ``ticker/price``) answered from the cache, with Binance's own
parameters, rows and error bodies (``{"code": -1121, "msg": "Invalid symbol."}``).

With a ``proxy`` (web/proxy) klines of a symbol or interval not followed are forwarded,
and a ``startTime``/``endTime`` range older than the stored one is first fetched and
stored through the official write path (``Status.fetch_older``) when it adjoins the
stored rows (at most ``FILL_MAX_CANDLES``), else forwarded as it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from livecandle.domain.model import SeriesKey
from livecandle.domain.universe import DELISTED
from livecandle.exchange.binance import params as bp
from livecandle.web.api import Api
from livecandle.web.candles import binance_body, live_parts
from livecandle.web.status import Status


class Forwarding(Protocol):
    """What the mirror asks of the proxy (web/proxy): the exchange's answer's bytes."""

    async def forwarded_bytes(self, path: str, q: Mapping[str, str]) -> bytes: ...

    def asked(self, symbols: Sequence[str]) -> None: ...


FILL_MAX_CANDLES = 5000  # older rows fetched and stored for one request, at most


class Mirror:
    """Binance's market-data endpoints over the chart API's reads."""

    def __init__(self, api: Api, status: Status) -> None:
        self.api = api
        self.status = status
        self.proxy: Forwarding | None = None
        self.listing: dict[SeriesKey, int] = {}  # first open time, once the exchange said

    async def binance_klines(self, request: Request) -> Response:
        body = await self.binance_klines_body(dict(request.query_params), request.url.path)
        return Response(body, media_type="application/json")

    async def binance_klines_body(self, q: dict[str, str], path: str = "/api/v3/klines") -> bytes:
        """``path``: klines or uiKlines, as asked (what is forwarded)."""
        served = self.api.served
        if self.proxy is not None:  # a symbol not followed is wanted on demand
            self.proxy.asked((q.get("symbol", "").upper(),))
        if self.proxy is not None and (
            q.get("symbol", "").upper() not in served.symbols
            or q.get("interval") not in served.intervals
        ):
            return await self.proxy.forwarded_bytes(path, q)
        kq = bp.klines_query(q, served.symbols)
        if kq.interval.name not in served.intervals:
            raise bp.BinanceParamError(-1120, "Invalid interval.")
        series = SeriesKey(kq.symbol, kq.interval)
        ranged = kq.start_ms is not None or kq.end_ms is not None
        if self.proxy is not None and ranged and not await self._held(series, kq):
            return await self.proxy.forwarded_bytes(path, q)
        members, _, latest, live_raw, closed = await self.api.official(
            series, kq.start_ms, kq.end_ms, kq.limit
        )
        live = live_parts(live_raw, latest, closed)
        return binance_body(members, live, kq.start_ms, kq.end_ms, kq.limit)

    async def _held(self, series: SeriesKey, kq: bp.KlinesQuery) -> bool:
        """Redis holds the rows the range asks for, after fetching (and storing) the
        older ones when they adjoin the stored rows; False: forward it instead."""
        length = series.interval.length_ms
        if not length:
            return False  # months: not worth the arithmetic, the exchange answers
        interval = series.interval
        if kq.start_ms is not None:  # the first row the exchange would answer opens then
            first = interval.open_of(kq.start_ms)
            if first < kq.start_ms:
                first = interval.next_open(first)
        else:
            assert kq.end_ms is not None
            first = interval.shift(interval.open_of(kq.end_ms), -(kq.limit - 1))
        if first > self.status.now_ms():
            return True  # a future range: nothing exists anywhere but what is live here
        meta = await self.api.store.meta(series)
        listing = self.listing.get(series)
        if meta.earliest is None:
            return False
        if first >= meta.earliest or (listing is not None and meta.earliest <= listing):
            return True
        missing = -(-(meta.earliest - first) // length)  # candles before the stored ones
        if missing > FILL_MAX_CANDLES:
            return False
        end = meta.earliest - length
        fetched = await self.status.fetch_older(series, end, missing)
        if fetched is None:
            return False  # no fetcher in this process
        if fetched < missing:  # nothing older exists: the listing
            after = await self.api.store.meta(series)
            if after.earliest is not None:
                self.listing[series] = after.earliest
        return True

    def exchange_info(self, request: Request) -> Response:
        q = dict(request.query_params)
        bp.only(q, ("symbol", "symbols"))
        names = bp.symbols_param(q, self.api.served.symbols)
        return JSONResponse(
            {
                "timezone": "UTC",
                "serverTime": self.status.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    }
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol(n) for n in names],
            }
        )

    def _symbol(self, symbol: str) -> dict[str, object]:
        """What is stored of the exchange's entry: status, assets and the price tick."""
        out: dict[str, object] = {"symbol": symbol, "status": self._status(symbol)}
        entry = self.api.served.entries.get(symbol)
        if entry is not None:
            if entry.base:
                out["baseAsset"] = entry.base
            if entry.quote:
                out["quoteAsset"] = entry.quote
            if entry.tick_size:
                out["filters"] = [{"filterType": "PRICE_FILTER", "tickSize": entry.tick_size}]
        return out

    def status_of(self, symbol: str) -> str:
        return self._status(symbol)

    def _status(self, symbol: str) -> str:
        """The exchange's status as last stored (a stopped symbol is no longer TRADING)."""
        entry = self.api.served.entries.get(symbol)
        if entry is None:
            return "TRADING"
        return "BREAK" if entry.status == DELISTED else entry.status  # Binance's word

    async def last_close(self, symbol: str) -> str | None:
        """Close of the newest official candle of the shortest served interval."""
        shortest = min(self.api.served.intervals.values(), key=lambda i: i.nominal_ms)
        newest = await self.api.store.members(SeriesKey(symbol, shortest), -1, -1)
        if not newest:
            return None
        close: str = msgspec.json.decode(newest[0][0])[4]
        return close
