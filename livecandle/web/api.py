"""Api: request handling of the HTTP API and the Binance-compatible mirror.

Every bad input is a 4xx whose JSON names the field and the value; nothing here is
allowed to answer 500 for a bad request. The Binance-compatible endpoints answer with
Binance's own error bodies (``{"code": -1121, "msg": "Invalid symbol."}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

import msgspec
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.domain.model import Candle, DecimalError, SeriesKey, to_units
from livecandle.exchange.binance import params as bp
from livecandle.store import LiveWrite
from livecandle.store.codec import live_value
from livecandle.web.candles import OfficialCache, binance_body, chart_body, live_parts
from livecandle.web.realtime import Realtime

if TYPE_CHECKING:
    from livecandle.runtime.service import Service

log = logging.getLogger(__name__)

MAX_BODY = 4096
MAX_CHART_LIMIT = 5000
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: later times are typos
_enc = msgspec.json.Encoder()


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, value: Any, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.value, self.message = status, field, value, message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.message, "field": self.field, "value": self.value}, self.status
        )


class Api:
    """Request handling, separate from routing so tests and benchmarks can reach it."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.symbols = tuple(service.settings.symbols)
        self.intervals = {i.name: i for i in service.settings.intervals}
        self.cache = OfficialCache()
        self.requests = 0
        self.errors_4xx = 0
        self.started = time.time()

    # -- validation ---------------------------------------------------------------------

    def series(self, symbol: str | None, interval: str | None) -> SeriesKey:
        if not symbol:
            raise ApiError(400, "symbol", symbol, "symbol is required (e.g. BTCUSDT)")
        if symbol not in self.symbols:
            raise ApiError(
                400,
                "symbol",
                symbol,
                f"symbol {symbol!r} is not served (served: {', '.join(self.symbols)})",
            )
        if not interval:
            raise ApiError(400, "interval", interval, "interval is required (e.g. 1m)")
        served = self.intervals.get(interval)
        if served is None:
            known = "is not a Binance interval" if interval not in INTERVALS else "is not served"
            raise ApiError(
                400,
                "interval",
                interval,
                f"interval {interval!r} {known} (served: {', '.join(self.intervals)})",
            )
        return SeriesKey(symbol, served)

    @staticmethod
    def aligned(name: str, value: int | None, interval: Interval) -> int | None:
        if value is not None and not 0 <= value <= MAX_TIME_MS:
            raise ApiError(
                400, name, value, f"{name}={value} is not a time in ms between 0 and {MAX_TIME_MS}"
            )
        if value is not None and not interval.is_aligned(value):
            raise ApiError(
                400,
                name,
                value,
                f"{name}={value} is not a {interval.name} open "
                f"time (nearest: {interval.open_of(value)})",
            )
        return value

    # -- chart API ----------------------------------------------------------------------

    async def klines(
        self,
        symbol: str | None,
        interval: str | None,
        start: int | None,
        end: int | None,
        limit: int,
    ) -> Response:
        body = await self.klines_body(symbol, interval, start, end, limit)
        return Response(body, media_type="application/json")

    async def klines_body(
        self,
        symbol: str | None,
        interval: str | None,
        start: int | None,
        end: int | None,
        limit: int,
    ) -> bytes:
        series = self.series(symbol, interval)
        self.aligned("start", start, series.interval)
        self.aligned("end", end, series.interval)
        if start is not None and end is not None and start > end:
            raise ApiError(400, "start", start, f"start={start} is after end={end}")
        members, rows, latest, live_raw, closed = await self.official(series, start, end, limit)
        live = live_parts(live_raw, latest, closed)
        if end is not None:
            live = [c for c in live if c["time"] <= end]
        if start is not None:
            live = [c for c in live if c["time"] >= start]
        if start is not None and len(members) >= limit:
            live = []  # the page is full of official rows; more come with the next start
        return chart_body(series.symbol, series.interval.name, rows, latest, live)

    async def official(
        self, series: SeriesKey, start: int | None, end: int | None, limit: int
    ) -> tuple[list[bytes], bytes, int | None, bytes | None, list[bytes]]:
        """Official members (and their chart rows) via the version cache, with
        ``latest``, the live value and the unconfirmed closed candles read in the same
        snapshot."""
        key = (series, start, end, limit)
        cache = self.cache
        read = await self.store.read_chart(series, start, end, limit, cache.version(key))
        if read.members is None:
            members, rows = cache.get(key)
        else:
            members = read.members
            rows = cache.put(key, read.version, members)
        return members, rows, read.latest, read.live, read.closed

    async def live_candle(self, symbol: str | None, interval: str | None) -> Response:
        series = self.series(symbol, interval)
        read = await self.store.read_chart(series, limit=1)
        parts = live_parts(read.live, read.latest, read.closed)
        forming = next((c for c in parts if c["state"] == "forming"), None)
        unconfirmed = [c for c in parts if c["state"] == "unconfirmed"]
        previous = unconfirmed[-1] if unconfirmed else None
        return JSONResponse(
            {
                "symbol": series.symbol,
                "interval": series.interval.name,
                "latest": read.latest,
                "candle": forming,
                "previous": previous,
            }
        )

    async def save_live_candle(self, request: Request) -> Response:
        token = self.settings.write_token
        if not token:
            raise ApiError(
                403,
                None,
                None,
                "writing live candles is disabled (set LIVECANDLE_WRITE_TOKEN to enable it)",
            )
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {token}":
            raise ApiError(401, "Authorization", None, "missing or wrong bearer token")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise ApiError(413, "body", length, f"body is larger than {MAX_BODY} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "body", len(raw), f"body is larger than {MAX_BODY} bytes")
        try:
            body = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError) as e:
            why = str(e) if isinstance(e, msgspec.DecodeError) else "nested too deeply"
            raise ApiError(
                400, "body", raw[:80].decode(errors="replace"), f"body is not JSON: {why}"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "body", type(body).__name__, "body must be a JSON object")
        series = self.series(_str(body, "symbol"), _str(body, "interval"))
        candle = _candle_from_body(body, series.interval)
        current = series.interval.open_of(self.server_ms())
        if candle.open_ms > current:
            raise ApiError(
                400,
                "time",
                candle.open_ms,
                f"time={candle.open_ms} is a future {series.interval.name} period "
                f"(the current one opens at {current})",
            )
        meta = await self.store.meta(series)
        if meta.latest is not None and candle.open_ms <= meta.latest:
            raise ApiError(
                409,
                "time",
                candle.open_ms,
                f"an official candle at or after "
                f"{candle.open_ms} is stored (latest {meta.latest}); live data "
                f"never replaces official data",
            )
        old = await self.store.live_candle(series)
        previous = None
        if old:
            with contextlib.suppress(msgspec.DecodeError):
                old_value = msgspec.json.decode(old)
                if isinstance(old_value, dict):
                    previous = old_value.get("previous")
        now = int(time.time() * 1000)
        value = live_value(series.symbol, series.interval.name, candle, False, None, False, now)
        value["previous"] = previous  # the stored one, as it is
        encoded = _enc.encode(value)
        message = _enc.encode({"time": now, "prices": [], "candles": [value]})
        await self.store.write_live([LiveWrite(series, encoded)], publish=message)
        return JSONResponse({"ok": True, "candle": value})

    async def metadata(self, symbol: str | None, interval: str | None) -> Response:
        series = self.series(symbol, interval)
        meta = await self.store.meta(series)
        gaps = await self.store.gaps(series)
        return JSONResponse(
            {
                "symbol": series.symbol,
                "interval": series.interval.name,
                "earliest": meta.earliest,
                "latest": meta.latest,
                "count": meta.count,
                "updated_ms": meta.updated_ms,
                "last_error": meta.last_error,
                "gaps": [{"start": a, "end": b} for a, b in gaps],
            }
        )

    # -- Binance-compatible mirror -----------------------------------------------------

    def server_ms(self) -> int:
        return self.service.rest.clock.now_ms()

    async def binance_klines(self, request: Request) -> Response:
        body = await self.binance_klines_body(dict(request.query_params))
        return Response(body, media_type="application/json")

    async def binance_klines_body(self, q: dict[str, str]) -> bytes:
        kq = bp.klines_query(q, self.symbols)
        if kq.interval.name not in self.intervals:
            raise bp.BinanceParamError(-1120, "Invalid interval.")
        series = SeriesKey(kq.symbol, kq.interval)
        members, _, latest, live_raw, closed = await self.official(
            series, kq.start_ms, kq.end_ms, kq.limit
        )
        live = live_parts(live_raw, latest, closed)
        return binance_body(members, live, kq.start_ms, kq.end_ms, kq.limit)

    def exchange_info(self, request: Request) -> Response:
        q = dict(request.query_params)
        bp.only(q, ("symbol", "symbols"))
        names = bp.symbols_param(q, self.symbols)
        return JSONResponse(
            {
                "timezone": "UTC",
                "serverTime": self.server_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    }
                ],
                "exchangeFilters": [],
                "symbols": [{"symbol": n, "status": "TRADING"} for n in names],
            }
        )

    async def ticker_price(self, request: Request) -> Response:
        q = dict(request.query_params)
        bp.only(q, ("symbol", "symbols"))
        single = "symbol" in q
        names = bp.symbols_param(q, self.symbols)
        values = await self.store.live_prices(names)
        out = []
        for name, raw in zip(names, values, strict=True):
            price = msgspec.json.decode(raw)["price"] if raw is not None else None
            if price is None:  # no trade seen yet: the newest official close
                price = await self.last_close(name)
            if price is not None:
                out.append({"symbol": name, "price": price})
            elif single:  # a served symbol with no data at all yet
                raise bp.BinanceParamError(-1121, "Invalid symbol.")
        return JSONResponse(out[0] if single else out)

    async def last_close(self, symbol: str) -> str | None:
        """Close of the newest official candle of the shortest served interval."""
        shortest = min(self.intervals.values(), key=lambda i: i.nominal_ms)
        newest = await self.store.members(SeriesKey(symbol, shortest), -1, -1)
        if not newest:
            return None
        close: str = msgspec.json.decode(newest[0][0])[4]
        return close

    # -- operations ---------------------------------------------------------------------

    async def health(self, realtime: Realtime) -> tuple[int, dict[str, Any]]:
        svc = self.service
        redis_ok, redis_ms, redis_error = True, None, None
        started = time.perf_counter()
        try:
            await asyncio.wait_for(cast(Awaitable[bool], self.store.redis.ping()), timeout=2)
            redis_ms = round((time.perf_counter() - started) * 1000, 3)
        except Exception as e:  # any failure here is the answer, not a crash
            redis_ok, redis_error = False, f"{type(e).__name__}: {e}"
        body: dict[str, Any] = {
            "status": "ok",
            "redis": {"ok": redis_ok, "latency_ms": redis_ms, "error": redis_error},
            "exchange": {
                "rest_url": self.settings.binance_rest_url,
                "error": svc.exchange_error,
                "weight_used": svc.rest.budget.used,
                "blocked_until_ms": svc.rest.budget.blocked_until_ms or None,
            },
            "tasks": svc.supervisor.status(),
            "realtime": {
                "clients": realtime.clients,
                "received": realtime.received,
                "emitted": realtime.emitted,
            },
        }
        if svc.stream is not None and svc.feed is not None:
            body["stream"] = {
                "connections": svc.stream.stats(),
                "reconnects": svc.stream.reconnects,
                **svc.feed.stats(),
            }
        elif redis_ok:
            body["stream"] = await self.store.heartbeat("stream")
        if svc.fetcher is not None:
            body["fetcher"] = svc.fetcher.snapshot()
        elif redis_ok:
            body["fetcher"] = await self.store.heartbeat("fetcher")
        degraded = svc.exchange_problem is not None or not svc.supervisor.healthy
        if not redis_ok:
            body["status"] = "down"
            return 503, body
        if degraded:
            body["status"] = "degraded"
        return 200, body

    def metrics(self, realtime: Realtime) -> str:
        svc = self.service
        lines = [
            "# TYPE livecandle_http_requests_total counter",
            f"livecandle_http_requests_total {self.requests}",
            "# TYPE livecandle_http_client_errors_total counter",
            f"livecandle_http_client_errors_total {self.errors_4xx}",
            "# TYPE livecandle_socketio_clients gauge",
            f"livecandle_socketio_clients {realtime.clients}",
            "# TYPE livecandle_socketio_emitted_total counter",
            f"livecandle_socketio_emitted_total {realtime.emitted}",
            "# TYPE livecandle_rest_weight_used gauge",
            f"livecandle_rest_weight_used {svc.rest.budget.used}",
            "# TYPE livecandle_rest_requests_total counter",
            f"livecandle_rest_requests_total {svc.rest.budget.requests}",
            "# TYPE livecandle_rest_retries_total counter",
            f"livecandle_rest_retries_total {svc.rest.retries}",
            "# TYPE livecandle_task_restarts_total counter",
        ]
        for name, info in svc.supervisor.status().items():
            lines.append(f'livecandle_task_restarts_total{{task="{name}"}} {info["restarts"]}')
        if svc.feed is not None and svc.stream is not None:
            st = svc.feed.stats()
            lines += [
                "# TYPE livecandle_stream_messages_total counter",
                f"livecandle_stream_messages_total {st['messages']}",
                "# TYPE livecandle_stream_bad_messages_total counter",
                f"livecandle_stream_bad_messages_total {st['bad_messages']}",
                "# TYPE livecandle_stream_reconnects_total counter",
                f"livecandle_stream_reconnects_total {svc.stream.reconnects}",
                "# TYPE livecandle_trade_gaps_total counter",
                "# TYPE livecandle_trades_recovered_total counter",
                "# TYPE livecandle_live_mismatches_total counter",
            ]
            for sym, s in st["symbols"].items():
                lines += [
                    f'livecandle_trade_gaps_total{{symbol="{sym}"}} {s["gaps"]}',
                    f'livecandle_trades_recovered_total{{symbol="{sym}"}} {s["recovered"]}',
                    f'livecandle_live_mismatches_total{{symbol="{sym}"}} {s["mismatches"]}',
                ]
        if svc.writer is not None:
            lines += [
                "# TYPE livecandle_live_flushes_total counter",
                f"livecandle_live_flushes_total {svc.writer.flushes}",
                "# TYPE livecandle_live_keys_written_total counter",
                f"livecandle_live_keys_written_total {svc.writer.keys_written}",
            ]
        if svc.fetcher is not None:
            lines += [
                "# TYPE livecandle_fetch_syncs_total counter",
                f"livecandle_fetch_syncs_total {svc.fetcher.syncs}",
                "# TYPE livecandle_official_latest_ms gauge",
            ]
            for series, s in svc.fetcher.status.items():
                if s.latest is not None:
                    lines.append(f'livecandle_official_latest_ms{{series="{series}"}} {s.latest}')
        return "\n".join(lines) + "\n"


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, name, value, f"{name} must be a string, got {type(value).__name__}")
    return value


def _candle_from_body(body: dict[str, Any], interval: Interval) -> Candle:
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
