"""app.py: routes (FastAPI), the ASGI fast path, socket.io and the page; the request
handling itself is in ``api``."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec
import redis.exceptions
import socketio
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from livecandle.exchange.binance import params as bp
from livecandle.runtime import http_server
from livecandle.web.api import MAX_CHART_LIMIT, MAX_TIME_MS, Api, ApiError
from livecandle.web.realtime import Realtime

if TYPE_CHECKING:
    from livecandle.runtime.service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
VENDOR = {
    "lightweight-charts.mjs": (
        "lightweight-charts/dist/lightweight-charts.standalone.production.mjs"
    ),
    "socket.io.mjs": "socket.io-client/dist/socket.io.esm.min.js",
    "socket.io.esm.min.js.map": "socket.io-client/dist/socket.io.esm.min.js.map",
}
_enc = msgspec.json.Encoder()
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def redis_unavailable(path: str, e: Exception) -> tuple[int, bytes]:
    """503 when Redis cannot be reached: a server problem, not a bad request."""
    log.warning("Redis unreachable while serving %s: %s", path, e)
    if path.startswith("/api/v3/"):
        msg = "Internal error; unable to process your request. Please try again."
        return 503, _enc.encode({"code": -1001, "msg": msg})
    error = f"Redis is unreachable ({type(e).__name__}: {e}); try again shortly"
    return 503, _enc.encode({"error": error, "field": None, "value": None})


def node_modules() -> Path:
    """The npm packages installed beside the project (``npm ci``)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / "node_modules").is_dir():
            return base / "node_modules"
    return Path(__file__).resolve().parents[2] / "node_modules"


_DIGITS = frozenset("0123456789")


def _plain_int(text: str | None) -> int | bool | None:
    """A query value that FastAPI would accept as a non-negative int, or False."""
    if text is None:
        return None
    if text and len(text) <= 18 and set(text) <= _DIGITS:
        return int(text)
    return False


class _FastReads:
    """The two hot read endpoints served straight from ASGI, skipping the framework's
    routing and validation (a third of their cost). Anything unusual is left to FastAPI,
    so errors and the OpenAPI description stay the framework's."""

    def __init__(self, app: Any, api: Api) -> None:
        self.app, self.api = app, api

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path in ("/api/v3/klines", "/api/v3/uiKlines"):
                q = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
                try:
                    body, status = await self.api.binance_klines_body(q), 200
                except bp.BinanceParamError as e:
                    body, status = _enc.encode(e.body()), e.status
                except REDIS_DOWN as e:
                    status, body = redis_unavailable(path, e)
                await _respond(send, status, body)
                return
            if path == "/api/klines":
                q = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
                start, end = _plain_int(q.get("start")), _plain_int(q.get("end"))
                limit = _plain_int(q.get("limit", "1000"))
                if (
                    set(q) <= {"symbol", "interval", "start", "end", "limit"}
                    and start is not False
                    and end is not False
                    and isinstance(limit, int)
                    and 1 <= limit <= MAX_CHART_LIMIT
                    and q.get("symbol")
                    and q.get("interval")
                ):
                    try:
                        body, status = (
                            await self.api.klines_body(
                                q["symbol"],
                                q["interval"],
                                start,
                                end,
                                limit,
                            ),
                            200,
                        )
                    except ApiError as e:
                        body, status = bytes(e.response().body), e.status
                    except REDIS_DOWN as e:
                        status, body = redis_unavailable(path, e)
                    await _respond(send, status, body)
                    return
        await self.app(scope, receive, send)


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Counting:
    """Counts requests and 4xx answers for /metrics (plain ASGI: Starlette's
    BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app: Any, api: Api) -> None:
        self.app, self.api = app, api

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = self.api
        api.requests += 1

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                api.errors_4xx += 1
            await send(message)

        await self.app(scope, receive, counted)


_DECIMAL = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]{0,8})?$", "example": "45120.50"}
LIVE_CANDLE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["symbol", "interval", "time", "open", "high", "low", "close"],
    "additionalProperties": False,
    "properties": {
        "symbol": {"type": "string"},
        "interval": {"type": "string"},
        "time": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TIME_MS,
            "description": "open time, ms, aligned to the interval",
        },
        "close_time": {"type": "integer", "description": "if given: the candle's last ms"},
        "open": _DECIMAL,
        "high": _DECIMAL,
        "low": _DECIMAL,
        "close": _DECIMAL,
        "volume": _DECIMAL,
        "quote_volume": _DECIMAL,
        "taker_buy_volume": _DECIMAL,
        "taker_buy_quote_volume": _DECIMAL,
        "trades": {"type": "integer", "minimum": 0},
        "is_incomplete": {"type": "boolean", "enum": [True]},
        "source": {"type": "string", "enum": ["live"]},
    },
}


_ERROR_BODY = {
    "type": "object",
    "required": ["error", "field", "value"],
    "properties": {
        "error": {"type": "string"},
        "field": {"type": ["string", "null"], "description": "the bad field, if one is"},
        "value": {"description": "the bad value, as sent"},
    },
}
_BINANCE_ERROR_BODY = {
    "type": "object",
    "required": ["code", "msg"],
    "properties": {"code": {"type": "integer"}, "msg": {"type": "string"}},
}
_STATUS_TEXT = {
    400: "Bad input: the body names the field and the value",
    401: "Missing or wrong bearer token",
    403: "Writing live candles is disabled (no LIVECANDLE_WRITE_TOKEN)",
    409: "An official candle is stored at or after this open time",
    413: "Body too large",
    503: "Redis is unreachable (or, for /healthz, the service is down)",
}
# the statuses each operation answers besides 200 (what the handlers really raise)
_STATUSES = {
    "/api/klines": (400, 503),
    "/live-candle": (400, 503),
    "/save-live-candle": (400, 401, 403, 409, 413, 503),
    "/api/metadata": (400, 503),
    "/healthz": (503,),
    "/api/v3/ping": (400,),
    "/api/v3/time": (400,),
    "/api/v3/exchangeInfo": (400,),
    "/api/v3/klines": (400, 503),
    "/api/v3/uiKlines": (400, 503),
    "/api/v3/ticker/price": (400, 503),
}
_BINANCE_PARAMS: dict[str, dict[str, Any]] = {
    "startTime": {
        "type": "string",
        "pattern": "^[0-9]{1,20}$",
        "description": "ms (or µs); not after endTime",
    },
    "endTime": {"type": "string", "pattern": "^[0-9]{1,20}$", "description": "ms (or µs)"},
    "limit": {"type": "string", "pattern": "^[1-9][0-9]{0,9}$", "description": "capped at 1000"},
    "timeZone": {"type": "string", "enum": ["0", "+0", "0:00", "00:00", "+00:00"]},
}


def _document(app: FastAPI, symbols: list[str], intervals: list[str]) -> None:
    """Make the OpenAPI document say what the endpoints do: the served symbols and
    intervals, the Binance parameter formats, the bearer token, and the statuses the
    handlers answer (400 with a body naming the field, never FastAPI's 422)."""
    build = app.openapi
    names = "|".join(re.escape(s) for s in symbols)
    served = {
        "symbol": {"type": "string", "enum": symbols},
        "interval": {"type": "string", "enum": intervals},
        # Binance's JSON list: ["BTCUSDT","ETHUSDT"]
        "symbols": {
            "type": "string",
            "pattern": f'^\\[("({names})")(,"({names})")*\\]$',
            "description": 'a JSON list, e.g. ["BTCUSDT","ETHUSDT"]; not together with symbol',
        },
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, ops in schema["paths"].items():
            binance = path.startswith("/api/v3/")
            for op in ops.values():
                for param in op.get("parameters", []):
                    name = param["name"]
                    if name in served:
                        param["schema"] = served[name]
                    elif binance and name in _BINANCE_PARAMS:
                        param["schema"] = _BINANCE_PARAMS[name]
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for status in _STATUSES.get(path, ()):
                    error = _BINANCE_ERROR_BODY if binance else _ERROR_BODY
                    if path == "/healthz":
                        error = {"type": "object"}
                    responses[str(status)] = {
                        "description": _STATUS_TEXT[status],
                        "content": {"application/json": {"schema": error}},
                    }
        body = {**LIVE_CANDLE_BODY, "properties": {**LIVE_CANDLE_BODY["properties"], **served}}
        del body["properties"]["symbols"]
        post = schema["paths"]["/save-live-candle"]["post"]
        post["requestBody"]["content"]["application/json"]["schema"] = body
        post["security"] = [{"bearer": []}]
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "LIVECANDLE_WRITE_TOKEN",
        }
        for name in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_app(service: Service) -> tuple[Any, Api, Realtime]:
    """The ASGI app (socket.io around FastAPI), its Api and its Realtime."""
    settings = service.settings
    api = Api(service)
    realtime = Realtime(
        service.store,
        settings.symbols,
        tuple(i.name for i in settings.intervals),
        emit_period_ms=settings.live_publish_period_ms,
    )
    app = FastAPI(
        title="livecandle",
        version="0.1.0",
        description="Official Binance klines plus exact live candles, from Redis.",
    )
    nm = node_modules()
    if not all((nm / p).exists() for p in VENDOR.values()):
        log.warning("front-end packages missing under %s: run `npm ci` (make run does)", nm)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return e.response()

    @app.exception_handler(bp.BinanceParamError)
    async def binance_error(request: Request, e: bp.BinanceParamError) -> JSONResponse:
        return JSONResponse(e.body(), e.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0]
        field = str(err["loc"][-1]) if err.get("loc") else None
        value = err.get("input")
        if request.url.path.startswith("/api/v3/"):
            return JSONResponse(
                {"code": -1100, "msg": f"Illegal characters found in parameter '{field}'."}, 400
            )
        return JSONResponse(
            {
                "error": f"{field}={value!r}: {err['msg']}",
                "field": field,
                "value": value if isinstance(value, str | int | None) else None,
            },
            400,
        )

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
    async def vendor(name: str) -> Response:
        rel = VENDOR.get(name)
        if rel is None or not (nm / rel).exists():
            raise ApiError(404, "name", name, f"no front-end package file {name!r} (npm ci?)")
        media = "application/json" if name.endswith(".map") else "text/javascript"
        return FileResponse(nm / rel, media_type=media)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/klines", summary="Official candles, then the live ones")
    async def klines(
        symbol: str = Query(..., description="e.g. BTCUSDT"),
        interval: str = Query(..., description="one of the served intervals, e.g. 1m"),
        start: int | None = Query(
            None, ge=0, le=MAX_TIME_MS, description="first open time (ms, aligned)"
        ),
        end: int | None = Query(
            None, ge=0, le=MAX_TIME_MS, description="last open time (ms, aligned)"
        ),
        limit: int = Query(1000, ge=1, le=MAX_CHART_LIMIT),
    ) -> Response:
        """Official candles ascending and unique by open time (each row: Binance's 12
        fields + ``"official"``), then the live candles after ``latest``: the just-closed
        one (``"unconfirmed"``) and the forming one (``"forming"``)."""
        return await api.klines(symbol, interval, start, end, limit)

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

    @app.get("/api/symbols")
    async def symbols() -> dict[str, Any]:
        return {
            "symbols": list(settings.symbols),
            "intervals": [i.name for i in settings.intervals],
        }

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status, body = await api.health(realtime)
        return JSONResponse(body, status)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(api.metrics(realtime), media_type="text/plain; version=0.0.4")

    @app.get("/api/v3/ping", tags=["binance"])
    async def ping(request: Request) -> JSONResponse:
        bp.only(dict(request.query_params), ())
        return JSONResponse({})

    @app.get("/api/v3/time", tags=["binance"])
    async def server_time(request: Request) -> JSONResponse:
        bp.only(dict(request.query_params), ())
        return JSONResponse({"serverTime": api.server_ms()})

    @app.get("/api/v3/exchangeInfo", tags=["binance"])
    async def exchange_info(
        request: Request, symbol: str | None = None, symbols: str | None = None
    ) -> Response:
        return api.exchange_info(request)

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
        return await api.binance_klines(request)

    @app.get("/api/v3/uiKlines", tags=["binance"], openapi_extra=binance_params)
    async def binance_ui_klines(request: Request) -> Response:
        return await api.binance_klines(request)

    @app.get("/api/v3/ticker/price", tags=["binance"])
    async def ticker_price(
        request: Request, symbol: str | None = None, symbols: str | None = None
    ) -> Response:
        return await api.ticker_price(request)

    _document(app, list(settings.symbols), [i.name for i in settings.intervals])
    asgi = socketio.ASGIApp(
        realtime.sio,
        other_asgi_app=_Counting(_FastReads(app, api), api),
        socketio_path="socket.io",
    )
    return asgi, api, realtime


async def run_web(service: Service, stop: asyncio.Event) -> None:
    """Serve HTTP + socket.io on the configured address until ``stop`` is set."""
    asgi, _, realtime = build_app(service)
    service.supervisor.spawn("web:realtime-listen", realtime.listen)
    service.supervisor.spawn("web:realtime-flush", realtime.flush_loop)
    settings = service.settings
    config = uvicorn.Config(
        asgi,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
    server, task, port = await http_server.start(config)
    service.web_url = f"http://{settings.host}:{port}"
    # everything allocated so far lives as long as the process: keep it out of the
    # collector's scans, so full collections (the p99 of a busy server) stay short
    gc.collect()
    gc.freeze()
    service.web_ready.set()
    log.info("livecandle is serving %s", service.web_url)
    print(f"livecandle: open {service.web_url} in a browser", flush=True)
    try:
        await stop.wait()
    finally:
        await http_server.stop(server, task)
