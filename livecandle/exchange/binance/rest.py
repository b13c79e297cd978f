"""Binance spot REST market-data client (klines, aggTrades, time, exchangeInfo).

The base URL is the only thing that differs between Binance and the livecandle emulator.
A request takes an HTTP connection only once the weight plan (``weights.WeightBudget``)
has let it go, and the plan never lets more go at once than the pool holds
(``max_connections``, told to the budget as ``connections``), so however many callers
wait, none waits for a pooled connection: they queue by priority in the plan, not in the
pool.

The HTTP client is aiohttp's: its C parser reads a 1,000-row klines answer (160 KB) for
about a third of httpx's CPU (0.8 against 2.5 ms on uvloop), and the history phase of
the whole market is ~10,000 of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDictProxy
from yarl import URL

from livecandle.backoff import delay_s
from livecandle.domain.clock import ServerClock
from livecandle.exchange.binance import parse
from livecandle.exchange.binance.weights import Priority, WeightBudget

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


# what a request can fail with short of an answer: connection, protocol, payload, timeout
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, read whole."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


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
    typed endpoints. ``failing`` says the last ``failing_after`` attempts all failed
    (network errors or 5xx), for health."""

    def __init__(
        self,
        base_url: str,
        clock: ServerClock | None = None,
        budget: WeightBudget | None = None,
        session: aiohttp.ClientSession | None = None,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        timeout_s: float = 10.0,
        failing_after: int = 3,
        max_connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock or ServerClock()
        self.budget = budget or WeightBudget(self.clock)
        self._own_session = session is None
        self._session = session
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        if session is None:
            # the plan lets no more requests go at once than the pool holds
            held = self.budget.connections
            self.budget.connections = min(held, max_connections) if held else max_connections
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retries = 0
        self.last_error: str | None = None
        self.failing_after = failing_after
        self.failures_in_row = 0  # attempts failed (network, 5xx) since the last success
        self.failing_since_s: float | None = None  # monotonic start of that streak

    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (made on first use: aiohttp wants a running loop)."""
        if self._session is None:
            # HTTPS_PROXY and friends are read once here: aiohttp's trust_env reads them
            # (and ~/.netrc, in a thread) on every request, doubling its CPU per request
            with contextlib.suppress(LookupError):  # none set
                self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self.base_url))
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections),
            )
        return self._session

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> BinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        priority: Priority = Priority.HISTORY,
        weight: int | None = None,
    ) -> bytes:
        """GET ``path`` with weight accounting and retries; the body on 200. ``weight``:
        where it depends on the parameters (depth by limit), else ``WEIGHTS``."""
        params = dict(params or {})
        weight = WEIGHTS.get(path, 1) if weight is None else weight
        context = _describe(path, params)
        failures = 0
        limited = 0
        while True:
            error: Exception | None = None
            async with self.budget.sending(weight, priority):
                sent_ms = self.clock.now_ms()
                try:
                    resp = await self._get(self.base_url + path, params)
                except TRANSPORT_ERRORS as e:
                    error = e
                else:
                    # inside the slot: a 429 blocks every sender before the next one goes
                    status = resp.status
                    body = self._account(resp, context, sent_ms)
            if error is None and status in (418, 429):
                await self.budget.share_pause()  # every process of the IP waits too
            if error is not None:
                failures += 1
                self._failed(f"{context}: {type(error).__name__}: {error}")
                if failures > self.max_retries:
                    raise BinanceUnavailable(
                        f"{context}: {failures} network failures, last: {error!r}"
                    ) from error
                wait_s = delay_s(failures, self.backoff_base_s, self.backoff_cap_s)
                self.retries += 1
                log.info("%s: %r, retry %d in %.2f s", context, error, failures, wait_s)
                await asyncio.sleep(wait_s)
                continue
            if status == 200:
                self.last_error = None
                self.failures_in_row, self.failing_since_s = 0, None
                return resp.body
            assert body is not None
            if status == 418:
                raise BinanceBanned(self.budget.blocked_until_ms, body.msg, context)
            if status == 429:
                limited += 1
                if limited > self.max_retries:
                    raise BinanceError(status, body.code, body.msg, context)
                continue
            if status >= 500 or body.code == -1008:
                failures += 1
                self._failed(f"{context}: HTTP {status}")
                if failures > self.max_retries:
                    raise BinanceUnavailable(f"{context}: HTTP {status} after {failures} tries")
                wait_s = delay_s(failures, self.backoff_base_s, self.backoff_cap_s)
                self.retries += 1
                log.info("%s: HTTP %d, retry %d in %.2f s", context, status, failures, wait_s)
                await asyncio.sleep(wait_s)
                continue
            self.failures_in_row, self.failing_since_s = 0, None  # the exchange answers
            raise BinanceError(status, body.code, body.msg, context)

    async def _get(self, url: str, params: Mapping[str, Any]) -> Answer:
        session = self.session()
        # no redirect followed: each request sent is one the plan counted
        async with session.get(
            url,
            params=params,
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            return Answer(resp.status, resp.reason or "", resp.headers, body)

    def _account(self, resp: Answer, context: str, sent_ms: int) -> parse.ErrorBody | None:
        """The weight the exchange counted; a 429 or 418 pauses every request. The error
        body unless the answer is a 200."""
        status = resp.status
        used = resp.headers.get(self.budget.header)
        if status == 200:
            if used is not None and used.isdigit():
                self.budget.observe(int(used), sent_ms=sent_ms)
            return None
        body = self._error_body(resp)
        if status == 429:
            reason = f"HTTP 429 on {context}: {body.msg}"
            stated = _STATED_LIMIT.search(body.msg)
            self.budget.limit_reached(
                _retry_after_s(resp),
                reason,
                int(stated.group(1)) if stated else None,
                int(used) if used is not None and used.isdigit() else None,
                _window_ms(stated),
            )
        elif status == 418:
            self.budget.banned(_retry_after_s(resp), f"HTTP 418 on {context}: {body.msg}")
        elif used is not None and used.isdigit():
            self.budget.observe(int(used), accepted=False, sent_ms=sent_ms)
        return body

    def _failed(self, error: str) -> None:
        """A network error or 5xx: the exchange is not answering properly."""
        self.last_error = error
        self.failures_in_row += 1
        if self.failing_since_s is None:
            self.failing_since_s = time.monotonic()

    @property
    def failing(self) -> bool:
        """The last ``failing_after`` attempts all failed (network or 5xx)."""
        return self.failures_in_row >= self.failing_after

    @staticmethod
    def _error_body(resp: Answer) -> parse.ErrorBody:
        try:
            return parse.error_decoder.decode(resp.body)
        except msgspec.DecodeError:
            text = resp.body.decode("utf-8", "replace").strip()[:200] or resp.reason
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
                self.budget.set_limit(rl.limit, _UNIT_MS.get(rl.interval, 60_000) * rl.intervalNum)
        return info

    async def keep_limits(self, period_s: float = 600.0) -> None:
        """Re-read exchangeInfo's rate limits every ``period_s`` until cancelled, so a
        changed limit is learned without a 429."""
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.exchange_info()
            except (BinanceError, BinanceUnavailable) as e:  # next period asks again
                log.warning("cannot re-read the exchange's rate limits: %s", e)

    async def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        priority: Priority = Priority.HISTORY,
    ) -> list[parse.KlineRow]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        if limit is not None:
            params["limit"] = limit
        return parse.klines_decoder.decode(await self.get("/api/v3/klines", params, priority))

    async def iter_klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        limit: int = KLINES_LIMIT,
        priority: Priority = Priority.HISTORY,
    ) -> AsyncIterator[list[parse.KlineRow]]:
        """Pages of klines from ``start_ms`` forward: each page starts 1 ms after the
        previous page's last open time (no overlap, nothing skipped, off-grid rows kept);
        stops on a short page or past ``end_ms``."""
        cursor = start_ms
        while end_ms is None or cursor <= end_ms:
            page = await self.klines(symbol, interval, cursor, end_ms, limit, priority)
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
        priority: Priority = Priority.GAP_FILL,
    ) -> list[parse.AggTrade]:
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return parse.agg_trades_decoder.decode(
            await self.get("/api/v3/aggTrades", params, priority)
        )


# Binance's -1003 body: "Too much request weight used; current limit is 6000 request
# weight per 1 MINUTE. ..."
_STATED_LIMIT = re.compile(
    r"current limit is (\d+) request weight(?: per (\d+) (SECOND|MINUTE|HOUR|DAY))?"
)
_UNIT_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def _window_ms(stated: re.Match[str] | None) -> int | None:
    """The window a -1003 body states ("per 2 SECOND"), if it states one."""
    if stated is None or stated.group(2) is None:
        return None
    return int(stated.group(2)) * _UNIT_MS[stated.group(3)]


def _retry_after_s(resp: Answer) -> float:
    value = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 60.0
