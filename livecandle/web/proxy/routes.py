"""The proxy's routes, in one place: Binance's tickers and avgPrice served from
livecandle's data, exchangeInfo the exchange's own, and every other ``/api/v3/``,
``/fapi/`` and ``/dapi/`` request forwarded. Installed after every other route: the
catch-alls must stay last (a route added later under ``/api/v3/`` would never match).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from livecandle.web.proxy.proxy import Proxy

_METHODS = ["GET", "POST", "PUT", "DELETE"]


def install(app: FastAPI, proxy: Proxy) -> None:
    @app.get("/api/v3/ticker/24hr", tags=["binance"])
    async def ticker_24hr(request: Request) -> Response:
        """24 h rolling statistics (FULL or MINI) of one, several or all symbols."""
        return await proxy.tickers(request, rolling=False)

    @app.get("/api/v3/ticker", tags=["binance"])
    async def ticker_rolling(request: Request) -> Response:
        """Rolling-window statistics (``windowSize`` 1m..7d) of one or several symbols."""
        return await proxy.tickers(request, rolling=True)

    @app.get("/api/v3/avgPrice", tags=["binance"])
    async def avg_price(request: Request) -> Response:
        """The volume-weighted price of the last 5 minutes."""
        return await proxy.avg_price(request)

    @app.api_route("/api/v3/{name:path}", methods=_METHODS, include_in_schema=False)
    async def spot(request: Request) -> Response:
        return await proxy.forward(request)

    @app.api_route("/fapi/{name:path}", methods=_METHODS, include_in_schema=False)
    async def usd_futures(request: Request) -> Response:
        return await proxy.forward(request)

    @app.api_route("/dapi/{name:path}", methods=_METHODS, include_in_schema=False)
    async def coin_futures(request: Request) -> Response:
        return await proxy.forward(request)
