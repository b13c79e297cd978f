"""The web app: the routes (FastAPI) wrapped in socket.io, request counting and the fast
read path. Request handling is in ``api`` and ``mirror``, ``/healthz`` and ``/metrics``
in ``health``; the process that runs the app gives it a ``Status``, a ``Store`` and its
``Settings``."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis.exceptions
import socketio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from livecandle.config import Settings
from livecandle.exchange.binance import params as bp
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.store import Store
from livecandle.web.api import Api
from livecandle.web.books import Books
from livecandle.web.counting import Counting, RequestCounts
from livecandle.web.depth import Depth
from livecandle.web.errors import ApiError, redis_unavailable
from livecandle.web.fast_reads import FastReads
from livecandle.web.head import HeadAsGet
from livecandle.web.health import Health
from livecandle.web.history import History
from livecandle.web.limits import Refusals, RequestLimits, SocketLimits
from livecandle.web.mirror import Mirror
from livecandle.web.openapi import LIVE_CANDLE_BODY, document
from livecandle.web.origins import Origins
from livecandle.web.params import chart_parameters, invalid
from livecandle.web.proxy import build_proxy
from livecandle.web.proxy.routes import install as install_proxy
from livecandle.web.realtime import Realtime
from livecandle.web.security import Security
from livecandle.web.status import Status
from livecandle.web.stream_hub import StreamHub
from livecandle.web.stream_proxy import StreamProxy
from livecandle.web.tickers import Tickers
from livecandle.web.vendor import STATIC, Vendor

log = logging.getLogger(__name__)


def build_app(
    status: Status,
    store: Store,
    settings: Settings,
    rest: BinanceRest | None = None,
    books: Books | None = None,
) -> tuple[Any, Api, Realtime]:
    """The ASGI app (socket.io around FastAPI), its Api and its Realtime. ``rest``: the
    process's exchange client, whose weight plan the proxy's forwarding shares (one of
    its own when not given); with ``books`` (the local order books) the proxy's depth and
    bookTicker too."""
    api = Api(status, store, settings)
    mirror = Mirror(api, status)
    proxy = build_proxy(api, mirror, status, store, settings, rest, books)
    mirror.proxy = proxy
    realtime = Realtime(
        store,
        settings.symbols,
        settings.intervals,
        status,
        emit_period_ms=settings.live_publish_period_ms,
        max_queue_packets=settings.realtime_max_queue,
        stall_s=settings.realtime_stall_s,
        cors_allowed_origins=Origins(settings.cors_origins),
        max_message_bytes=settings.ws_max_bytes,
    )
    counts = RequestCounts()
    health = Health(status, store, realtime, counts)
    if proxy.wishes is not None:
        health.on_demand = proxy.wishes.stats
    vendor = Vendor()
    app = FastAPI(
        title="livecandle",
        version="0.1.0",
        description="Official Binance klines plus exact live candles, from Redis.",
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return e.response()

    @app.exception_handler(bp.BinanceParamError)
    async def binance_error(request: Request, e: bp.BinanceParamError) -> JSONResponse:
        return JSONResponse(e.body(), e.status, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0]
        field = str(err["loc"][-1]) if err.get("loc") else None
        if request.url.path.startswith("/api/v3/"):
            return JSONResponse(
                {"code": -1100, "msg": f"Illegal characters found in parameter '{field}'."}, 400
            )
        return invalid(field, err.get("input"), err["msg"]).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(e.detail), "field": None, "value": None},
            e.status_code,
            headers=e.headers,  # Allow, on a 405
        )

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def redis_down(request: Request, e: redis.exceptions.RedisError) -> JSONResponse:
        status, body = redis_unavailable(request.url.path, e)
        return JSONResponse(msgspec.json.decode(body), status)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/vendor/{name}", include_in_schema=False)
    async def vendor_file(name: str) -> Response:
        return vendor.file(name)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get(
        "/api/klines",
        summary="Official candles, then the live ones",
        openapi_extra={"parameters": chart_parameters()},
    )
    async def klines(request: Request) -> Response:
        """Official candles ascending and unique by open time (each row: Binance's 12
        fields + ``"official"``), then the live candles after ``latest``: the just-closed
        one (``"unconfirmed"``) and the forming one (``"forming"``)."""
        # FastReads answers every GET before routing; this route describes the endpoint
        # (chart_parameters) and answers the same, through the same validator
        return await api.klines(request.query_params)

    @app.get("/live-candle", summary="The forming candle (seed name)")
    async def live_candle(symbol: str = Query(...), interval: str = Query(...)) -> Response:
        return await api.live_candle(symbol, interval)

    @app.post(
        "/save-live-candle",
        summary="Store a live candle (bearer token)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": LIVE_CANDLE_BODY}},
            }
        },
    )
    async def save_live_candle(request: Request) -> Response:
        """Body: ``{symbol, interval, time, open, high, low, close[, volume, ...]}``;
        prices as decimal strings. Writes only ``live_candle``, never official data."""
        return await api.save_live_candle(request)

    @app.get("/api/metadata")
    async def metadata(symbol: str = Query(...), interval: str = Query(...)) -> Response:
        return await api.metadata(symbol, interval)

    history = History(status, store, api.served)
    tickers = Tickers(store, lambda: api.served.symbols, settings.intervals, status.now_ms)

    @app.get("/api/history", summary="Older official candles (stored, else fetched)")
    async def older(request: Request) -> Response:
        return Response(await history.page(request.query_params), media_type="application/json")

    @app.get("/api/tickers", summary="Last price, 24 h change and quote volume of all")
    async def all_tickers() -> Response:
        return Response(await tickers.body(), media_type="application/json")

    @app.get("/api/symbols")
    async def symbols() -> dict[str, Any]:
        return await api.symbols()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status, body = await health.body()
        return JSONResponse(body, status)

    depth = Depth(books) if books is not None else None
    health.proxy, health.depth = proxy, depth

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        text = health.metrics() + ("".join(f"{m}\n" for m in depth.metrics()) if depth else "")
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/api/v3/ping", tags=["binance"])
    async def ping(request: Request) -> JSONResponse:
        bp.only(dict(request.query_params), ())
        return JSONResponse({})

    @app.get("/api/v3/time", tags=["binance"])
    async def server_time(request: Request) -> JSONResponse:
        bp.only(dict(request.query_params), ())
        return JSONResponse({"serverTime": status.now_ms()})

    @app.get("/api/v3/exchangeInfo", tags=["binance"])
    async def exchange_info(
        request: Request,
        symbol: str | None = None,
        symbols: str | None = None,
        permissions: str | None = None,
        symbolStatus: str | None = None,
        showPermissionSets: str | None = None,
    ) -> Response:
        return await proxy.exchange_info(request)

    binance_params = {
        "parameters": [
            {
                "name": n,
                "in": "query",
                "required": n in ("symbol", "interval"),
                "schema": {"type": "string"},
            }
            for n in ("symbol", "interval", "startTime", "endTime", "limit", "timeZone")
        ]
    }

    @app.get("/api/v3/klines", tags=["binance"], openapi_extra=binance_params)
    async def binance_klines(request: Request) -> Response:
        """Binance's ``/api/v3/klines`` from the cache: same parameters, rows and errors."""
        return await mirror.binance_klines(request)

    @app.get("/api/v3/uiKlines", tags=["binance"], openapi_extra=binance_params)
    async def binance_ui_klines(request: Request) -> Response:
        return await mirror.binance_klines(request)

    @app.get("/api/v3/ticker/price", tags=["binance"])
    async def ticker_price(
        request: Request, symbol: str | None = None, symbols: str | None = None
    ) -> Response:
        return await proxy.ticker_price(request)

    if depth is not None:
        app.get("/api/v3/depth", tags=["binance"])(depth.depth)
        app.get("/api/v3/ticker/bookTicker", tags=["binance"])(depth.book_ticker)

    install_proxy(app, proxy)  # catch-alls for /api/v3, /fapi, /dapi: keep it last

    # with patterns the served symbols change at run time: no fixed list in the document
    listed = [] if settings.symbol_patterns else list(settings.symbols)
    document(app, listed, [i.name for i in settings.intervals])
    refusals = Refusals(counts.refused)
    socket_limits = SocketLimits(
        realtime.sio,
        refusals,
        sessions_per_ip=settings.socketio_sessions_per_ip,
        messages_per_s=settings.socketio_messages_per_s,
        max_rooms=settings.socketio_max_rooms,
    ).install()
    asgi = socketio.ASGIApp(
        realtime.sio,
        other_asgi_app=HeadAsGet(Counting(FastReads(app, api, mirror), counts)),
        socketio_path="socket.io",
    )
    # Binance's websocket streams (/ws, /ws/<stream>, /stream), proxied: beside socket.io
    streams = StreamProxy(asgi, StreamHub(settings.binance_ws_url))
    health.streams = streams
    limited = RequestLimits(
        streams,
        settings.requests_per_ip,
        settings.queued_requests_per_ip,
        refusals,
        socketio_max_bytes=settings.ws_max_bytes,
        session_refusal=socket_limits.session_refusal,
    )
    return Security(limited, settings.cors_origins), api, realtime
