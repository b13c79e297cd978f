"""Any symbol on demand (issue 11): a proxy request for a symbol the configuration does
not follow is forwarded, makes the symbol wanted (Redis), and the universe follower
(another process's roles) follows it up to the cap (history, then the live candle);
once its history is stored the proxy answers it from Redis. A symbol nobody asks for
any more is dropped (its data kept); a symbol the exchange does not list is never
wanted. Real redis-server, real emulator, the service split into a fetcher+stream
``serve`` and a web ``serve`` that share nothing but Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.domain.intervals import parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.runtime.service import Service
from livecandle.store import Store
from livecandle.store.demand import DemandStore
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service

M1 = parse_interval("1m")
ETH = SeriesKey("ETHUSDT", M1)


@pytest.fixture(scope="module")
def market() -> Iterator[EmulatorProcess]:
    """Three symbols; the service is configured with BTCUSDT only."""
    with EmulatorProcess(
        "--rate", "20", "--history-days", "1", "--seed", "5", symbols="BTCUSDT,ETHUSDT,BNBUSDT"
    ) as emu:
        yield emu


@contextlib.asynccontextmanager
async def split(
    redis_url: str, market: EmulatorProcess, **settings: Any
) -> AsyncIterator[tuple[Service, Service, httpx.AsyncClient]]:
    """The fetcher and stream roles in one ``serve``, the web in another."""
    common: dict[str, Any] = {"symbols": "BTCUSDT", "backfill_candles": 5, **settings}
    async with (
        running_service(redis_url, market, "1m", ("fetcher", "stream"), **common) as follower,
        running_service(redis_url, market, "1m", ("web",), port=0, **common) as web_svc,
        httpx.AsyncClient(base_url=str(web_svc.web_url), timeout=30) as web,
    ):
        yield follower, web_svc, web


async def until(check: Callable[[], Any], within_s: float = 30.0) -> Any:
    async with asyncio.timeout(within_s):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.1)


def upstream_count(market: EmulatorProcess, endpoint: str) -> int:
    stats = httpx.get(market.rest_url + "/_emulator/stats", timeout=10).json()
    return int(stats["requests_by_endpoint"].get(endpoint, 0))


async def status_of(web: httpx.AsyncClient, symbol: str) -> dict[str, Any] | None:
    body = (await web.get("/api/symbols")).json()
    return next((e for e in body["status"] if e["symbol"] == symbol), None)


def streams_of(svc: Service) -> set[str]:
    assert svc.stream is not None
    return {s for g in svc.stream.groups for s in g.streams}


async def test_an_unfollowed_symbol_is_forwarded_then_followed_then_answered_locally_within_the_cap(
    redis_url: str, redis: aioredis.Redis, store: Store, market: EmulatorProcess
) -> None:
    demand = DemandStore(store)
    async with split(redis_url, market, proxy_follow_cap=1) as (follower, _, web):
        q = {"symbol": "ETHUSDT", "interval": "1m", "limit": "5"}
        before = upstream_count(market, "uiKlines")
        r = await web.get("/api/v3/uiKlines", params=q)
        assert r.status_code == 200 and len(r.json()) == 5
        assert upstream_count(market, "uiKlines") == before + 1  # forwarded

        # wanted, admitted and followed by the other process: history, then live
        await until(lambda: redis.hexists(store.keys.universe_demand, "ETHUSDT"), 10)
        await until(lambda: "ethusdt@aggTrade" in streams_of(follower), 10)
        await until(lambda: store.live_candle(ETH), 30)
        assert (await store.meta(ETH)).count >= 5
        entry = await until(lambda: status_of(web, "ETHUSDT"), 10)
        assert entry["demand"] == "on-demand" and entry["followed"] is True
        assert entry["demand_since_ms"] > 0 and entry["asked_ms"] > 0

        # the cap: a second symbol asked for is wanted, never followed, still forwarded
        r = await web.get("/api/v3/klines", params={**q, "symbol": "BNBUSDT"})
        assert r.status_code == 200
        await until(lambda: _wanted(demand, "BNBUSDT"), 10)
        await asyncio.sleep(1.5)  # a few admissions later
        assert set(await redis.hkeys(store.keys.universe_demand)) == {b"ETHUSDT"}
        assert "bnbusdt@aggTrade" not in streams_of(follower)
        before = upstream_count(market, "uiKlines")
        r = await web.get("/api/v3/uiKlines", params={**q, "symbol": "BNBUSDT"})
        assert r.status_code == 200
        assert upstream_count(market, "uiKlines") == before + 1

        # warm: answered from Redis (the web process learns it from the stored universe)
        await until(lambda: _served(web, "ETHUSDT"), 15)
        before = upstream_count(market, "uiKlines")
        for _ in range(3):
            r = await web.get("/api/v3/uiKlines", params=q)
            assert r.status_code == 200
            rows = r.json()
            assert len(rows) == 5 and rows[-1][0] > rows[0][0]
        assert upstream_count(market, "uiKlines") == before  # no upstream call
        health = (await web.get("/healthz")).json()
        assert health["on_demand"]["followed"] == 1 and health["on_demand"]["cap"] == 1

        # a symbol the exchange does not list: Binance's -1121, and never wanted
        r = await web.get("/api/v3/klines", params={**q, "symbol": "NOSUCHUSDT"})
        assert r.status_code == 400 and r.json()["code"] == -1121
        r = await web.get("/api/v3/avgPrice", params={"symbol": "NOSUCHUSDT"})
        assert r.status_code == 400 and r.json()["code"] == -1121
        await asyncio.sleep(2.5)  # past the wishes' batching
        assert "NOSUCHUSDT" not in await demand.wanted()


async def _wanted(demand: DemandStore, symbol: str) -> bool:
    return symbol in await demand.wanted()


async def _served(web: httpx.AsyncClient, symbol: str) -> bool:
    return symbol in (await web.get("/api/symbols")).json()["symbols"]


async def test_a_symbol_nobody_asks_for_any_more_stops_being_followed_and_keeps_its_data(
    redis_url: str, redis: aioredis.Redis, store: Store, market: EmulatorProcess
) -> None:
    async with split(redis_url, market, proxy_follow_idle_s=3) as (follower, _, web):
        r = await web.get("/api/v3/avgPrice", params={"symbol": "ETHUSDT"})
        assert r.status_code == 200  # forwarded
        await until(lambda: "ethusdt@aggTrade" in streams_of(follower), 10)
        await until(lambda: store.live_candle(ETH), 30)
        stored = (await store.meta(ETH)).count
        assert stored >= 5
        # nobody asks: dropped after the idle time, streams and fetches stopped
        await until(lambda: "ethusdt@aggTrade" not in streams_of(follower), 15)
        assert follower.fetcher is not None and ETH not in follower.fetcher.series
        entry = await until(lambda: _idle(web, "ETHUSDT"), 10)
        assert entry["followed"] is False and entry["asked_ms"] > 0
        assert (await store.meta(ETH)).count >= stored  # its data kept
        assert not await redis.hexists(store.keys.universe_demand, "ETHUSDT")
        # and it is forwarded again (not answered from its stale data)
        before = upstream_count(market, "avgPrice")
        r = await web.get("/api/v3/avgPrice", params={"symbol": "ETHUSDT"})
        assert r.status_code == 200 and upstream_count(market, "avgPrice") == before + 1


async def _idle(web: httpx.AsyncClient, symbol: str) -> dict[str, Any] | None:
    entry = await status_of(web, symbol)
    return entry if entry is not None and entry.get("demand") == "idle" else None


async def test_following_on_demand_is_off_with_a_cap_of_zero(
    redis_url: str, redis: aioredis.Redis, store: Store, market: EmulatorProcess
) -> None:
    async with split(redis_url, market, proxy_follow_cap=0) as (follower, _, web):
        r = await web.get("/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m"})
        assert r.status_code == 200
        await asyncio.sleep(2.5)
        assert await DemandStore(store).wanted() == {}
        assert "ethusdt@aggTrade" not in streams_of(follower)
