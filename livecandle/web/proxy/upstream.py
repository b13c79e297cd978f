"""Upstream: requests the proxy cannot answer from its own data, forwarded 1:1 to the
exchange through the one weight plan (``Priority.PROXY``), with Binance's weight of each
endpoint. When the plan has no room the proxy answers Binance's 429 itself
(``{"code":-1003,...}``, ``Retry-After``, ``X-MBX-USED-WEIGHT-1M`` of its own budget): a
client's burst never becomes the IP's ban. Identical requests in flight share one
upstream call, and answers that may be a little old (tickers, depth, exchangeInfo) are
kept a short while. Signed (API-key) requests are refused unless ``forward_signed``.
``/fapi/`` and ``/dapi/`` go to the futures hosts, each with its own budget (Binance
counts their weight apart from spot's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import httpx
import msgspec

from livecandle.exchange.binance.rest import BinanceRest
from livecandle.exchange.binance.weights import Priority, WeightBudget

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

# a kept-alive connection the exchange closed as it was reused (its idle timeout
# crossing the request): the request never got an answer, a GET is sent again
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_RESENDS = 2

# /api/v3 endpoints that need an API key (and mostly a signature)
SIGNED = frozenset(
    {
        "account",
        "account/commission",
        "myTrades",
        "myPreventedMatches",
        "myAllocations",
        "order",
        "order/test",
        "order/oco",
        "order/cancelReplace",
        "order/amend/keepPriority",
        "order/amendments",
        "orderList",
        "orderList/oco",
        "orderList/oto",
        "orderList/otoco",
        "openOrders",
        "allOrders",
        "allOrderList",
        "openOrderList",
        "rateLimit/order",
        "sor/order",
        "sor/order/test",
        "userDataStream",
    }
)
# seconds an answer may be served again, by endpoint (none: never kept)
TTL_S = {
    "exchangeInfo": 60.0,
    "ticker/24hr": 1.0,
    "ticker/price": 1.0,
    "ticker/bookTicker": 1.0,
    "ticker": 1.0,
    "ticker/tradingDay": 1.0,
    "avgPrice": 1.0,
    "depth": 1.0,
    "trades": 1.0,
}
_KEPT_HEADERS = ("content-type",)
MAX_CACHED = 4096


def _symbols_count(q: Mapping[str, str]) -> int | None:
    if "symbol" in q:
        return 1
    text = q.get("symbols")
    if text is None:
        return None
    try:
        return len(msgspec.json.decode(text, type=list[str]))
    except msgspec.DecodeError:
        return 1


def weight(name: str, q: Mapping[str, str]) -> int:
    """Binance's request weight of ``/api/v3/<name>`` with these parameters (the
    reference's tables); 2 for an endpoint not listed."""
    n = _symbols_count(q)
    if name == "ticker/24hr":
        if n is None:
            return 80
        return 2 if n <= 20 else 40 if n <= 100 else 80
    if name in ("ticker/price", "ticker/bookTicker"):
        return 2 if "symbol" in q else 4
    if name in ("ticker", "ticker/tradingDay"):
        return min(4 * (n or 1), 200)
    if name == "depth":
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else 100
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    table = {
        "ping": 1,
        "time": 1,
        "exchangeInfo": 20,
        "klines": 2,
        "uiKlines": 2,
        "aggTrades": 4,
        "trades": 25,
        "historicalTrades": 25,
        "avgPrice": 2,
    }
    return table.get(name, 2)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def binance_error(
    status: int, code: int, msg: str, headers: dict[str, str] | None = None
) -> Answer:
    return Answer(status, _json.encode({"code": code, "msg": msg}), headers or {})


@dataclass
class _Host:
    base_url: str
    budget: WeightBudget


class Upstream:
    """Forwarding to the spot host (``rest``'s URL and budget) and the futures hosts."""

    def __init__(
        self,
        rest: BinanceRest,
        fapi_url: str = "https://fapi.binance.com",
        dapi_url: str = "https://dapi.binance.com",
        forward_signed: bool = False,
        futures_limit: int = 2400,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.rest = rest
        self.forward_signed = forward_signed
        self.hosts = {
            "api": _Host(rest.base_url, rest.budget),
            "fapi": _Host(fapi_url.rstrip("/"), WeightBudget(rest.clock, limit=futures_limit)),
            "dapi": _Host(dapi_url.rstrip("/"), WeightBudget(rest.clock, limit=futures_limit)),
        }
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout_s)
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._flying: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.forwarded = 0  # requests sent upstream
        self.refused = 0  # answered 429 by the proxy itself
        self.cache_hits = 0

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    def signed(self, name: str, q: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        return name in SIGNED or "signature" in q or "x-mbx-apikey" in headers

    def refuse_signed(self) -> Answer:
        return binance_error(
            401,
            -1002,
            "You are not authorized to execute this request: this market-data proxy does "
            "not forward API-key (signed) requests; set LIVECANDLE_PROXY_FORWARD_SIGNED=1 "
            "to forward them untouched.",
        )

    async def forward(
        self,
        path: str,
        query: str,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        body: bytes = b"",
    ) -> Answer:
        """``path`` (``/api/v3/...``, ``/fapi/...``, ``/dapi/...``) and its raw query
        string, as the client sent them. Signed requests (when allowed) go untouched
        and unmetered; public GETs through the budget and the short cache."""
        headers = headers or {}
        prefix, _, rest_of = path.lstrip("/").partition("/")
        host = self.hosts.get(prefix)
        if host is None:
            return binance_error(404, -1000, f"Unknown path {path}.")
        name = rest_of.partition("/")[2] if prefix == "api" else rest_of
        pairs = parse_qsl(query, keep_blank_values=True)
        q = dict(pairs)
        if method != "GET" or self.signed(name, q, headers):
            if not self.forward_signed:
                return self.refuse_signed()
            return await self._untouched(host, path, query, headers, method, body)
        key = (path, urlencode(sorted(pairs)))  # parameters in any order: one entry
        ttl = TTL_S.get(name) if prefix == "api" else TTL_S.get(name.rsplit("/", 1)[-1])
        if ttl is not None:
            kept = self._cache.get(key)
            if kept is not None and time.monotonic() - kept[0] < ttl:
                self.cache_hits += 1
                return kept[1]
        flying = self._flying.get(key)
        if flying is not None:
            return await asyncio.shield(flying)
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._flying[key] = fut
        try:
            answer = await self._metered(host, path, query, weight(name, q))
            fut.set_result(answer)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: a waiter may not exist
            raise
        finally:
            del self._flying[key]
        if ttl is not None and answer.status == 200:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (time.monotonic(), answer)
        return answer

    def over_budget(self, budget: WeightBudget, cost: int) -> Answer | None:
        """The proxy's own 429 when ``cost`` does not fit in the budget's spare room."""
        if budget.room(Priority.PROXY) >= cost:
            return None
        self.refused += 1
        w = budget.window_ms
        window = f"{w // 60_000} MINUTE" if w % 60_000 == 0 else f"{max(1, w // 1000)} SECOND"
        wait_s = max(1, -(-budget.retry_after_ms() // 1000))
        return binance_error(
            429,
            -1003,
            f"Too much request weight used; current limit is {budget.ceiling(Priority.PROXY)} "
            f"request weight per {window} (this proxy's share of the IP's). Please use "
            f"WebSocket Streams for live updates to avoid polling the API.",
            {"Retry-After": str(wait_s), "X-MBX-USED-WEIGHT-1M": str(budget.used)},
        )

    async def _metered(self, host: _Host, path: str, query: str, cost: int) -> Answer:
        budget = host.budget
        refused = self.over_budget(budget, cost)
        if refused is not None:
            return refused
        url = host.base_url + path + ("?" + query if query else "")
        async with budget.sending(cost, Priority.PROXY):
            sent_ms = budget.clock.now_ms()
            try:
                resp = await self._get(url)
            except httpx.TransportError as e:
                log.info("forwarding %s: %r", path, e)
                return binance_error(
                    503, -1001, "Internal error; unable to process your request. Please try again."
                )
            self.forwarded += 1
            self._account(budget, resp, path, sent_ms)
        if resp.status_code in (418, 429):
            await budget.share_pause()  # every process of the IP waits too
        out = {k: resp.headers[k] for k in _KEPT_HEADERS if k in resp.headers}
        out["X-MBX-USED-WEIGHT-1M"] = str(budget.used)
        if "retry-after" in resp.headers:
            out["Retry-After"] = resp.headers["retry-after"]
        return Answer(resp.status_code, resp.content, out)

    async def _get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """A GET, sent again (at most ``_RESENDS`` times) when a pooled connection
        turned out closed by the server before it answered."""
        for _ in range(_RESENDS):
            try:
                return await self.client.get(url, headers=headers)
            except _STALE as e:
                log.info("resending %s: %r", url, e)
        return await self.client.get(url, headers=headers)

    @staticmethod
    def _account(budget: WeightBudget, resp: httpx.Response, path: str, sent_ms: int) -> None:
        """The exchange's count and pauses, as ``BinanceRest`` learns them (a count from
        an answer to a request sent in a window that has ended since is not heeded)."""
        used_text = resp.headers.get(budget.header, "")
        used = int(used_text) if used_text.isdigit() else None
        status = resp.status_code
        retry = resp.headers.get("retry-after", "")
        retry_s = float(retry) if retry.isdigit() else 60.0
        if status == 429:
            budget.limit_reached(retry_s, f"HTTP 429 on forwarded {path}", None, used)
        elif status == 418:
            budget.banned(retry_s, f"HTTP 418 on forwarded {path}")
        elif used is not None:
            budget.observe(used, accepted=status == 200, sent_ms=sent_ms)

    async def _untouched(
        self,
        host: _Host,
        path: str,
        query: str,
        headers: Mapping[str, str],
        method: str,
        body: bytes,
    ) -> Answer:
        url = host.base_url + path + ("?" + query if query else "")
        sent = {k: v for k, v in headers.items() if k.lower() in ("x-mbx-apikey", "content-type")}
        try:
            if method == "GET":
                resp = await self._get(url, sent)
            else:  # an order may have been taken: never sent twice
                resp = await self.client.request(method, url, headers=sent, content=body)
        except httpx.TransportError:
            return binance_error(
                503, -1001, "Internal error; unable to process your request. Please try again."
            )
        self.forwarded += 1
        out = {k: resp.headers[k] for k in _KEPT_HEADERS if k in resp.headers}
        for k, v in resp.headers.items():
            if k.lower().startswith("x-mbx-") or k.lower() == "retry-after":
                out[k] = v
        return Answer(resp.status_code, resp.content, out)
