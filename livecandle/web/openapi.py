"""The OpenAPI document, made to say what the endpoints really do: the served symbols
and intervals, the Binance parameter formats, the live candle body, the bearer token,
and the statuses each handler answers (400 with a body naming the field, never
FastAPI's 422)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from livecandle.web.live_body import MAX_TRADES, MAX_WHOLE_DIGITS
from livecandle.web.params import MAX_TIME_MS

_DECIMAL = {
    "type": "string",
    "pattern": f"^0*[0-9]{{1,{MAX_WHOLE_DIGITS}}}(\\.[0-9]{{0,8}})?$",
    "example": "45120.50",
}
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
        "trades": {"type": "integer", "minimum": 0, "maximum": MAX_TRADES},
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


def document(app: FastAPI, symbols: list[str], intervals: list[str]) -> None:
    """Make the OpenAPI document say what the endpoints do: the served symbols and
    intervals, the Binance parameter formats, the bearer token, and the statuses the
    handlers answer (400 with a body naming the field, never FastAPI's 422)."""
    build = app.openapi
    # no list: the served symbols follow the exchange's listing (LIVECANDLE_SYMBOLS=*...)
    names = "|".join(re.escape(s) for s in symbols) if symbols else "[A-Z0-9]+"
    served = {
        "symbol": (
            {"type": "string", "enum": symbols}
            if symbols
            else {"type": "string", "pattern": "^[A-Z0-9]+$", "description": "see /api/symbols"}
        ),
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
