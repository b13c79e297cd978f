"""The exchange emulator's ASGI app: Binance's REST market-data API over a seeded market.

REST: ``/api/v3/{ping,time,exchangeInfo,klines,uiKlines,aggTrades}`` with Binance's
parameters, weights, headers and error bodies; ``depth`` and ``ticker/bookTicker`` from
``depth_feed``. Websocket streams live in ``streams``.
Test-only controls (fault switches, counters, listings and statuses) are under
``/_emulator/`` (``controls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from livecandle.emulator import controls, depth_feed, tickers, wire
from livecandle.emulator.exchange_info import ExchangeInfo
from livecandle.emulator.faults import Faults
from livecandle.emulator.gauges import GcPauses, LoopLag, RestCost
from livecandle.emulator.kline_table import KlineTable, agg_row
from livecandle.emulator.klines import klines
from livecandle.emulator.limits import WeightLimiter
from livecandle.emulator.market import SymbolMarket
from livecandle.emulator.outbox import RawSend
from livecandle.emulator.schedule import Market
from livecandle.emulator.streams import StreamHub, WsLimits
from livecandle.emulator.tape import TradeTuple
from livecandle.emulator.universe import QUOTES
from livecandle.exchange.binance import params as bp

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()
WEIGHTS = {"ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2, "uiKlines": 2, "aggTrades": 4}
# tickers (emulator/tickers.py): their weight depends on the parameters
TICKERS = ("ticker/24hr", "ticker/price", "ticker", "avgPrice")
FUTURES_INFO = ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo")


@dataclass
class EmulatorConfig:
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    seed: int = 1
    rate_per_s: float = 5.0  # each symbol's trades/s, unless total_rate is set
    total_rate: float | None = None  # trades/s of the whole market, shared with a skew
    history_days: int = 1100
    clock_offset_ms: int = 0
    weight_limit: int = 6000
    weight_window_ms: int = 60_000
    enforce_weights: bool = True
    outages_ms: tuple[tuple[int, int], ...] = ()
    tick_ms: int = 10
    ws_limits: WsLimits = field(default_factory=WsLimits)


class Emulator:
    def __init__(self, config: EmulatorConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.market = Market(
            config.symbols,
            config.seed,
            self.now_ms(),
            config.rate_per_s,
            config.history_days,
            config.outages_ms,
            config.total_rate,
        )
        quotes = tuple(dict.fromkeys((*QUOTES, "BUSD", "TUSD", "DAI", "AUD", "GBP")))
        self.exchange_info = ExchangeInfo(quotes)
        self.tickers = tickers.Tickers()
        self.limiter = WeightLimiter(
            limit=config.weight_limit,
            window_ms=config.weight_window_ms,
            enforce=config.enforce_weights,
        )
        self.requests = 0
        self.by_endpoint: dict[str, int] = {}  # requests answered, by endpoint
        self.stale_rows = 0  # just-closed klines rows served stale (the stale switch)
        self.failed = 0
        self.hub: StreamHub | None = None  # attached by build_app
        self.loop_lag = LoopLag()
        self.rest_cost = RestCost()
        self.gc_pauses = GcPauses()
        self._rng = random.Random(config.seed)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.config.clock_offset_ms

    def advance(self) -> tuple[int, dict[str, list[TradeTuple]]]:
        now = self.now_ms()
        return now, self.market.advance(now)

    # -- REST ---------------------------------------------------------------------------

    @property
    def _window_spec(self) -> tuple[int, str]:
        """Binance's (intervalNum, interval) of the weight window."""
        w = self.limiter.window_ms
        if w % 60_000 == 0:
            return w // 60_000, "MINUTE"
        return max(1, w // 1000), "SECOND"

    @property
    def _weight_header(self) -> str:
        num, unit = self._window_spec
        return f"X-MBX-USED-WEIGHT-{num}{unit[0]}"

    def _respond(
        self, body: Any, status: int, used: int, extra: dict[str, str] | None = None
    ) -> Response:
        headers = {self._weight_header: str(used)}
        if extra:
            headers.update(extra)
        content = body if isinstance(body, bytes) else _json.encode(body)  # bytes: pre-encoded
        return Response(content, status, headers, media_type="application/json")

    async def handle(self, request: Request) -> Response:
        endpoint = request.scope["path"].split("/api/v3/", 1)[-1]
        ip = request.client.host if request.client else "?"
        return self.answer(endpoint, request.query_params, ip)

    def answer(self, endpoint: str, params: Mapping[str, str], ip: str) -> Response:
        """A REST request's response: ``endpoint`` (the path after ``/api/v3/``) with the
        query ``params`` from client ``ip``."""
        self.requests += 1
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
        now = self.publish()  # the answer holds every trade up to now
        started = time.thread_time()  # the answer's own cost (the trades are the ticker's)
        try:
            return self._handle(endpoint, params, ip, now)
        finally:
            self.rest_cost.add(endpoint, started)

    def publish(self) -> int:
        """Run the market up to now and send its new trades to their streams: now."""
        now, new = self.advance()
        if self.hub is not None and any(new.values()):
            self.hub.publish(new)
        return now

    def _handle(self, endpoint: str, params: Mapping[str, str], ip: str, now: int) -> Response:
        if endpoint in TICKERS:
            weight = tickers.weight(endpoint, params)
        else:
            weight = WEIGHTS.get(endpoint) or depth_feed.rest_weight(endpoint, params)
        verdict = self.limiter.charge(ip, weight, now)
        if verdict.status == 429:
            window = " ".join(map(str, self._window_spec))
            return self._respond(
                {
                    "code": -1003,
                    "msg": f"Too much request weight used; current limit is "
                    f"{self.limiter.limit} request weight per {window}. Please use "
                    f"WebSocket Streams for live updates to avoid polling the API.",
                },
                429,
                verdict.used,
                {"Retry-After": str(verdict.retry_after_s)},
            )
        if verdict.status == 418:
            until = now + verdict.retry_after_s * 1000
            return self._respond(
                {
                    "code": -1003,
                    "msg": f"Way too much request weight used; IP banned until "
                    f"{until}. Please use WebSocket Streams for live updates to avoid bans.",
                },
                418,
                verdict.used,
                {"Retry-After": str(verdict.retry_after_s)},
            )
        if self.faults.fail_rate and self._rng.random() < self.faults.fail_rate:
            self.failed += 1
            return Response(b"<html>502 Bad Gateway</html>", 502, media_type="text/html")
        try:
            body = self._endpoint(endpoint, dict(params), now)
        except bp.BinanceParamError as e:
            return self._respond(e.body(), e.status, verdict.used)
        return self._respond(body, 200, verdict.used)

    def _endpoint(self, endpoint: str, q: dict[str, str], now: int) -> Any:
        symbols = self.market.symbols
        if endpoint == "ping":
            bp.only(q, ())
            return {}
        if endpoint == "time":
            bp.only(q, ())
            return {"serverTime": now}
        if endpoint == "exchangeInfo":
            return self._exchange_info(q, now)
        if endpoint in ("klines", "uiKlines"):
            kq = bp.klines_query(q, symbols)
            sm = symbols[kq.symbol]
            table = klines(sm, kq.interval, kq.start_ms, kq.end_ms, kq.limit)
            if kq.end_ms is not None:
                table = table[: int(np.searchsorted(table.rows[0], kq.end_ms, "right"))]
            if self.faults.stale_klines_ms:
                self._stale(sm, table, now, self.faults.stale_klines_ms)
            return wire.klines_body(table)
        if endpoint == "aggTrades":
            return self._agg_trades(q)
        if endpoint == "depth" and self.hub is not None:
            return self.hub.depth.depth(q, now)
        if endpoint == "ticker/bookTicker" and self.hub is not None:
            return self.hub.depth.book_ticker(q, now)
        if endpoint in TICKERS:
            statuses = {s: x.status for s, x in self.market.listings.items()}
            return self.tickers.answer(endpoint, q, symbols, statuses, now)
        if endpoint in FUTURES_INFO:  # enough for clients that load every market type
            return {"timezone": "UTC", "serverTime": now, "rateLimits": [], "symbols": []}
        raise bp.BinanceParamError(-1000, "An unknown error occurred while processing the request.")

    def _stale(self, sm: SymbolMarket, table: KlineTable, now: int, stale_ms: int) -> None:
        """The stale switch: each row closed less than ``stale_ms`` ago as computed from
        its trades up to ``stale_cut_ms`` (at most half the candle) before its close."""
        ago = now - (table.rows[1] + 1)
        for i in np.flatnonzero((ago >= 0) & (ago < stale_ms)).tolist():
            row = table.row(i)
            open_ms, close_ms = row[0], row[1]
            end = close_ms + 1 - min(self.faults.stale_cut_ms, (close_ms + 1 - open_ms) // 2)
            agg = sm.range_agg(open_ms, end)
            if agg is not None:
                stale = agg_row(open_ms, close_ms, agg)
            else:
                price = sm.last_price_before(open_ms)
                price = row[2] if price is None else price
                stale = [open_ms, close_ms, price, price, price, price, 0, 0, 0, 0, 0]
            if stale != row:
                self.stale_rows += 1
                table.set_row(i, stale)

    def _exchange_info(self, q: dict[str, str], now: int) -> bytes:
        num, unit = self._window_spec
        head = {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": unit,
                    "intervalNum": num,
                    "limit": self.limiter.limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 300000,
                },
            ],
            "exchangeFilters": [],
        }
        statuses = {s: x.status for s, x in self.market.listings.items()}
        return self.exchange_info.body(q, statuses, head)

    def _agg_trades(self, q: dict[str, str]) -> bytes:
        bp.only(q, ("symbol", "fromId", "startTime", "endTime", "limit"))
        sm = self.market.symbols[bp.symbol_param(q, self.market.symbols)]
        from_id = bp.optional_long(q, "fromId")
        start = bp.to_ms(bp.optional_long(q, "startTime"))
        end = bp.to_ms(bp.optional_long(q, "endTime"))
        limit = bp.optional_int(q, "limit")
        limit = 500 if limit is None else limit
        if limit < 1:
            raise bp.BinanceParamError(-1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(limit, 1000)
        if start is not None and end is not None:
            if end < start:
                raise bp.BinanceParamError(-1128, "Combination of optional parameters invalid.")
            if end - start > 3_600_000:
                raise bp.BinanceParamError(
                    -1127, "More than 1 hours between startTime and endTime."
                )
        out = []
        if from_id is not None:
            it = sm.trades_from_id(from_id)
        elif start is not None:
            it = sm.trades_from_time(start)
        elif end is not None:
            it = sm.trades_from_time(max(0, end - 3_600_000 + 1))
        else:
            it = sm.trades_from_id(max(0, sm.last_agg_id - limit + 1))
        for t in it:
            if end is not None and t[5] > end:
                break
            out.append(t)
            if len(out) >= limit:
                break
        return wire.agg_trades(out)

    # -- controls -----------------------------------------------------------------------

    async def controls(self, request: Request) -> Response:
        return await controls.handle(self, request)

    async def book_control(self, request: Request) -> Response:
        assert self.hub is not None
        return await self.hub.depth.control(request, self.now_ms())


def build_app(emulator: Emulator) -> KlinesFirst:
    hub = StreamHub(
        emulator, emulator.config.seed, emulator.config.tick_ms, emulator.config.ws_limits
    )
    emulator.hub = hub

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        emulator.loop_lag.start()
        emulator.gc_pauses.start()
        try:
            yield
        finally:
            emulator.gc_pauses.stop()
            await emulator.loop_lag.stop()
            await hub.stop()

    rest = [Route(f"/api/v3/{name}", emulator.handle) for name in (*WEIGHTS, *TICKERS)]
    rest += [Route(f"/api/v3/{name}", emulator.handle) for name in depth_feed.ROUTES]
    rest += [Route(path, emulator.handle) for path in FUTURES_INFO]
    app = Starlette(
        routes=[
            *rest,
            Route("/_emulator/state", emulator.controls, methods=["GET", "POST"]),
            Route("/_emulator/stats", emulator.controls),
            Route("/_emulator/book", emulator.book_control, methods=["GET", "POST"]),
            WebSocketRoute("/ws/{streams:path}", hub.raw_endpoint),
            WebSocketRoute("/ws", hub.raw_endpoint),
            WebSocketRoute("/stream", hub.combined_endpoint),
        ],
        middleware=[Middleware(RawSend)],
        lifespan=lifespan,
    )
    return KlinesFirst(app, emulator)


class KlinesFirst:
    """The emulator's ASGI app: ``GET /api/v3/klines`` (and ``uiKlines``) answered before
    Starlette's middleware and router, everything else by ``app``. A whole-market
    backfill asks ~60 klines a second of the emulator, and the framework's part of each
    answer was a fifth of its cost: CPU the service under test did not get.

    One klines answer per turn of the event loop: a backfill keeps several requests in
    flight, and answered back to back (4-6 ms of CPU each on 2 busy cores) they held the
    trade streams' ticker and the websocket writers for tens of milliseconds at a time,
    a delay the service's live latency showed as its own. Between two answers the loop
    now runs its timers (the ticker) and its I/O (the writers) once, and the trades up to
    an answer's start are written before it is computed."""

    PATHS = {"/api/v3/klines": "klines", "/api/v3/uiKlines": "uiKlines"}

    def __init__(self, app: Starlette, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator
        self._turn: asyncio.Lock | None = None  # made in the server's loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            endpoint = self.PATHS.get(scope["path"])
            if endpoint is not None:
                # as Starlette's Request.query_params and .client read them
                query = scope["query_string"].decode("latin-1")
                params = dict(parse_qsl(query, keep_blank_values=True))
                client = scope.get("client")
                if self._turn is None:
                    self._turn = asyncio.Lock()
                async with self._turn:
                    # the trades up to now first: the writers send them before the answer
                    self.emulator.publish()
                    await asyncio.sleep(0)
                    response = self.emulator.answer(endpoint, params, client[0] if client else "?")
                    # hold the turn until the loop has gone round: the next answer waits
                    # for the timers and writers that came due during this one
                    await asyncio.sleep(0)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
