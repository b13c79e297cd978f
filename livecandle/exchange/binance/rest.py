"""Binance spot REST market-data client (klines, aggTrades, time, exchangeInfo).

The base URL is the only thing that differs between Binance and the livecandle emulator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import msgspec

from livecandle.backoff import delay_s
from livecandle.domain.clock import ServerClock
from livecandle.exchange.binance import parse
from livecandle.exchange.binance.weights import WeightBudget

log = logging.getLogger(__name__)

KLINES_LIMIT = 1000
AGG_TRADES_LIMIT = 1000
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/aggTrades": 4,
}


class BinanceError(Exception):
    """Binance refused a request (4xx with an error body)."""

    def __init__(self, status: int, code: int | None, msg: str, context: str) -> None:
        self.status, self.code, self.msg, self.context = status, code, msg, context
        detail = f"{code} {msg}" if code is not None else msg
        super().__init__(f"Binance rejected {context}: {detail} (HTTP {status})")


class BinanceBanned(BinanceError):
    """HTTP 418: the IP is banned; every REST call waits until ``until_ms``."""

    def __init__(self, until_ms: int, msg: str, context: str) -> None:
        super().__init__(418, -1003, msg, context)
        self.until_ms = until_ms


class BinanceUnavailable(Exception):
    """Network errors or 5xx persisted through every retry."""


def _describe(path: str, params: Mapping[str, Any]) -> str:
    name = path.rsplit("/", 1)[-1]
    parts = [name]
    if "symbol" in params:
        parts.append(f"for symbol {params['symbol']!r}")
    if "interval" in params:
        parts.append(f"interval {params['interval']!r}")
    return " ".join(parts)


class BinanceRest:
    """One exchange host: weight accounting, retries of network errors and 5xx (the
    n-th retry waits ``livecandle.backoff.delay_s(n, backoff_base_s, backoff_cap_s)``),
    typed endpoints."""

    def __init__(
        self,
        base_url: str,
        clock: ServerClock | None = None,
        budget: WeightBudget | None = None,
        client: httpx.AsyncClient | None = None,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock or ServerClock()
        self.budget = budget or WeightBudget(self.clock)
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=timeout_s, limits=httpx.Limits(max_connections=32)
        )
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retries = 0
        self.last_error: str | None = None

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    async def __aenter__(self) -> BinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> bytes:
        """GET ``path`` with weight accounting and retries; the body on 200."""
        params = dict(params or {})
        weight = WEIGHTS.get(path, 1)
        context = _describe(path, params)
        failures = 0
        limited = 0
        while True:
            await self.budget.acquire(weight)
            try:
                resp = await self.client.get(self.base_url + path, params=params)
            except httpx.TransportError as e:
                failures += 1
                self.last_error = f"{context}: {type(e).__name__}: {e}"
                if failures > self.max_retries:
                    raise BinanceUnavailable(
                        f"{context}: {failures} network failures, last: {e!r}"
                    ) from e
                wait_s = delay_s(failures, self.backoff_base_s, self.backoff_cap_s)
                self.retries += 1
                log.info("%s: %r, retry %d in %.2f s", context, e, failures, wait_s)
                await asyncio.sleep(wait_s)
                continue
            used = resp.headers.get(self.budget.header)
            if used is not None and used.isdigit():
                self.budget.observe(int(used))
            status = resp.status_code
            if status == 200:
                self.last_error = None
                return resp.content
            body = self._error_body(resp)
            if status in (418, 429):
                retry_after_s = _retry_after_s(resp)
                self.budget.block(retry_after_s, f"HTTP {status} on {context}: {body.msg}")
                if status == 418:
                    raise BinanceBanned(
                        self.clock.now_ms() + int(retry_after_s * 1000), body.msg, context
                    )
                limited += 1
                if limited > self.max_retries:
                    raise BinanceError(status, body.code, body.msg, context)
                continue
            if status >= 500 or body.code == -1008:
                failures += 1
                self.last_error = f"{context}: HTTP {status}"
                if failures > self.max_retries:
                    raise BinanceUnavailable(f"{context}: HTTP {status} after {failures} tries")
                wait_s = delay_s(failures, self.backoff_base_s, self.backoff_cap_s)
                self.retries += 1
                log.info("%s: HTTP %d, retry %d in %.2f s", context, status, failures, wait_s)
                await asyncio.sleep(wait_s)
                continue
            raise BinanceError(status, body.code, body.msg, context)

    @staticmethod
    def _error_body(resp: httpx.Response) -> parse.ErrorBody:
        try:
            return parse.error_decoder.decode(resp.content)
        except msgspec.DecodeError:
            text = resp.text.strip()[:200] or resp.reason_phrase
            return parse.ErrorBody(code=None, msg=text)

    # -- endpoints ----------------------------------------------------------------------

    async def ping(self) -> None:
        await self.get("/api/v3/ping")

    async def server_time(self) -> int:
        """Server time; also re-estimates the clock offset."""
        sent = self.clock.now_ms() - self.clock.offset_ms
        body = await self.get("/api/v3/time")
        received = self.clock.now_ms() - self.clock.offset_ms
        server_ms = parse.time_decoder.decode(body).serverTime
        self.clock.observe(sent, received, server_ms)
        return server_ms

    async def exchange_info(self) -> parse.ExchangeInfo:
        info = parse.exchange_info_decoder.decode(await self.get("/api/v3/exchangeInfo"))
        for rl in info.rateLimits:
            if rl.rateLimitType == "REQUEST_WEIGHT":
                unit = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
                self.budget.set_limit(rl.limit, unit.get(rl.interval, 60_000) * rl.intervalNum)
        return info

    async def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[parse.KlineRow]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        if limit is not None:
            params["limit"] = limit
        return parse.klines_decoder.decode(await self.get("/api/v3/klines", params))

    async def iter_klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        limit: int = KLINES_LIMIT,
    ) -> AsyncIterator[list[parse.KlineRow]]:
        """Pages of klines from ``start_ms`` forward: each page starts 1 ms after the
        previous page's last open time (no overlap, nothing skipped, off-grid rows kept);
        stops on a short page or past ``end_ms``."""
        cursor = start_ms
        while end_ms is None or cursor <= end_ms:
            page = await self.klines(symbol, interval, cursor, end_ms, limit)
            if not page:
                return
            yield page
            if len(page) < limit:
                return
            cursor = page[-1].open_ms + 1

    async def agg_trades(
        self,
        symbol: str,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = AGG_TRADES_LIMIT,
    ) -> list[parse.AggTrade]:
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return parse.agg_trades_decoder.decode(await self.get("/api/v3/aggTrades", params))


def _retry_after_s(resp: httpx.Response) -> float:
    value = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 60.0
