"""FastReads: the hot read endpoints served straight from ASGI, skipping the framework's
routing and validation (a third of their cost).

``/api/klines`` is checked by the same validator as its route (``Served.chart``), so
answers and errors are the same whichever path serves a request; the Binance klines
by the mirror's own parameter parser.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec

from livecandle.exchange.binance import params as bp
from livecandle.web.api import Api
from livecandle.web.errors import REDIS_DOWN, ApiError, redis_unavailable
from livecandle.web.mirror import Mirror

_enc = msgspec.json.Encoder()
BINANCE_KLINES = ("/api/v3/klines", "/api/v3/uiKlines")


class FastReads:
    def __init__(self, app: Any, api: Api, mirror: Mirror) -> None:
        self.app, self.api, self.mirror = app, api, mirror

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path in BINANCE_KLINES:
                headers: dict[str, str] | None = None
                q = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
                try:
                    body, status = await self.mirror.binance_klines_body(q, path), 200
                except bp.BinanceParamError as e:
                    body, status = _enc.encode(e.body()), e.status
                    headers = getattr(e, "headers", None)  # a forwarded 429's Retry-After
                except REDIS_DOWN as e:
                    status, body = redis_unavailable(path, e)
                await _respond(send, status, body, headers)
                return
            if path == "/api/klines":
                q = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
                try:
                    query = self.api.served.chart(q)
                    body, status = await self.api.klines_body(query), 200
                except ApiError as e:
                    body, status = bytes(e.response().body), e.status
                except REDIS_DOWN as e:
                    status, body = redis_unavailable(path, e)
                await _respond(send, status, body)
                return
        await self.app(scope, receive, send)


async def _respond(
    send: Any, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
