"""The proxy's tickers (issue 11): a window older than the backfill is fetched in the
background and then answered locally, concurrent identical requests share one
computation, and a FULL ticker's best bid/ask come from a warm local order book. The real
service on a real redis-server, the emulator upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.domain.intervals import DAY_MS, MINUTE_MS, parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.runtime.service import Service
from livecandle.store import Store
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service

S1M = SeriesKey("BTCUSDT", parse_interval("1m"))


@pytest.fixture(scope="module")
def market() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(
        "--rate", "5", "--history-days", "3", "--seed", "17", symbols="BTCUSDT,ETHUSDT"
    ) as emu:
        yield emu


@pytest.fixture
def backfill() -> int:
    return 1500  # a day and more of 1m candles: tickers from Redis at once


@pytest.fixture
async def proxy(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess, backfill: int
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    # ``redis`` (flushed) before the service starts: else the previous test's candles are
    # there at its first sync (a backfill taken as done) and flushed under it by ``store``
    market.control(reset_limits=True, weight_limit=6000, enforce_weights=True)
    async with (
        running_service(
            redis_url,
            market,
            "1m,1h",
            roles=("fetcher", "stream", "web"),
            symbols="BTCUSDT,ETHUSDT",
            port=0,
            backfill_candles=backfill,
            proxy_follow_cap=0,
        ) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=30) as web,
    ):
        yield svc, web


async def _stats(market: EmulatorProcess) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        r = await client.get(market.rest_url + "/_emulator/stats")
    by: dict[str, int] = r.json()["requests_by_endpoint"]
    return by


async def _upstream_tickers(market: EmulatorProcess) -> int:
    by = await _stats(market)
    return sum(n for name, n in by.items() if name in ("ticker/24hr", "ticker"))


async def _served_locally(web: httpx.AsyncClient) -> int:
    n: int = (await web.get("/healthz")).json()["proxy"]["rest"]["served_locally"]
    return n


async def _until(check: Any, within_s: float = 60.0) -> Any:
    async with asyncio.timeout(within_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("backfill", [1000])
async def test_a_day_older_than_the_backfill_is_fetched_and_then_answered_locally(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess, store: Store
) -> None:
    svc, web = proxy

    async def backfilled() -> bool:
        return (await store.meta(S1M)).count >= 1000

    await _until(backfilled)
    assert (await store.meta(S1M)).earliest > svc.now_ms() - DAY_MS  # less than a day held
    asked = await _upstream_tickers(market)
    first = (await web.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"})).json()
    assert first["firstId"] != -1  # the exchange's answer: it keeps trade ids
    assert await _upstream_tickers(market) == asked + 1

    async def older_held() -> bool:
        earliest = (await store.meta(S1M)).earliest
        start = svc.now_ms() // MINUTE_MS * MINUTE_MS - DAY_MS
        return earliest is not None and earliest <= start

    await _until(older_held)
    # an equivalent request (the first answer is kept a second under its own key)
    again = await web.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT", "type": "FULL"})
    assert again.status_code == 200
    assert again.json()["firstId"] == -1  # livecandle's own: it keeps no trade ids
    assert again.json()["closeTime"] - again.json()["openTime"] >= DAY_MS
    assert await _upstream_tickers(market) == asked + 1


async def test_concurrent_identical_ticker_requests_share_one_computation(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess
) -> None:
    _, web = proxy
    await _until(lambda: _local_ticker(web))
    asked = await _upstream_tickers(market)
    before = await _served_locally(web)
    day = {"symbol": "ETHUSDT", "windowSize": "1d", "type": "MINI"}
    # connections opened first: the twenty requests arrive together, not over a second
    await asyncio.gather(*(web.get("/api/v3/ping") for _ in range(20)))
    answers = await asyncio.gather(*(web.get("/api/v3/ticker", params=day) for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert await _served_locally(web) == before + 1  # one computation for the twenty
    assert await _upstream_tickers(market) == asked
    # an error reaches every one of them
    bad = {"symbol": "ETHUSDT", "windowSize": "8d"}
    errors = await asyncio.gather(*(web.get("/api/v3/ticker", params=bad) for _ in range(5)))
    assert {(e.status_code, e.json()["code"]) for e in errors} == {(400, -1100)}


async def _local_ticker(web: httpx.AsyncClient) -> bool:
    r = await web.get("/api/v3/ticker", params={"symbol": "BTCUSDT", "windowSize": "1m"})
    return r.status_code == 200 and r.json()["firstId"] == -1


async def _depth_is_local(web: httpx.AsyncClient, market: EmulatorProcess) -> bool:
    before = (await _stats(market)).get("depth", 0)
    r = await web.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 1})
    assert r.status_code == 200
    return (await _stats(market)).get("depth", 0) == before


async def _top(web: httpx.AsyncClient) -> tuple[str, ...]:
    top = (await web.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 1})).json()
    return (*top["bids"][0], *top["asks"][0])


async def test_a_full_tickers_best_bid_and_ask_are_the_warm_books_top(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess
) -> None:
    _, web = proxy
    await _until(lambda: _local_ticker(web))
    await _until(lambda: _depth_is_local(web, market))  # the book is warm and in sync
    book_tickers = (await _stats(market)).get("ticker/bookTicker", 0)
    # equivalent requests, each under its own answer-cache key: computed afresh
    variants: list[dict[str, str]] = [
        {"symbol": "BTCUSDT"},
        {"symbol": "BTCUSDT", "type": "FULL"},
        {"symbols": '["BTCUSDT"]'},
        {"symbols": '["BTCUSDT"]', "type": "FULL"},
        {"symbol": "BTCUSDT", "symbolStatus": "TRADING"},
    ]
    matched = 0
    for params in variants:
        before = await _top(web)
        r = await web.get("/api/v3/ticker/24hr", params=params)
        after = await _top(web)
        body = r.json()
        t = body[0] if isinstance(body, list) else body
        assert t["firstId"] == -1  # answered locally
        # the book's top when the ticker was computed: the one before or after (unless
        # it moved twice meanwhile, rare)
        matched += (t["bidPrice"], t["bidQty"], t["askPrice"], t["askQty"]) in (before, after)
    assert matched >= 3
    assert (await _stats(market)).get("ticker/bookTicker", 0) == book_tickers
    # a symbol with no book: its bid and ask are the exchange's, and no book is started
    eth = (await web.get("/api/v3/ticker/24hr", params={"symbol": "ETHUSDT"})).json()
    assert eth["firstId"] == -1 and float(eth["bidPrice"]) > 0
    assert (await _stats(market)).get("ticker/bookTicker", 0) == book_tickers + 1
    health = (await web.get("/healthz")).json()
    assert health["proxy"]["books"]["books"] == 1
