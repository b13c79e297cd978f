"""The universe against a real emulator and a real Redis: ``*`` and ``*QUOTE`` follow
what the exchange lists; at run time a listing is followed (history and live candles), a
BREAK and a delisting stop cleanly (streams, fetches and live state gone, data kept,
``/api/symbols`` says so) and a re-listing resumes.

The run-time cases drive the listing through ``Listings``, a ``ListingSource`` the test
controls (the emulator serves every symbol's trades and klines meanwhile). When the
emulator's run-time state switch lands, ``Listings`` is replaced by the emulator's own
``exchangeInfo`` (``listing=None``) and ``set`` by ``emulator.control(...)``: the
assertions stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.config import Settings, parse_intervals, parse_symbol_spec
from livecandle.domain.intervals import parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.domain.universe import Listing
from livecandle.exchange.binance.feed_source import streams_for
from livecandle.official.universe import ListingSource
from livecandle.runtime.serve import serve
from livecandle.runtime.service import Service
from livecandle.store import Keys, Store
from tests.helpers import EmulatorProcess

MARKET = "BTCUSDT,ETHUSDT,ETHBTC"


@pytest.fixture(scope="module")
def market() -> Iterator[EmulatorProcess]:
    """An emulator with a symbol quoted in BTC besides two in USDT."""
    with EmulatorProcess(
        "--rate", "20", "--history-days", "2", "--seed", "11", symbols=MARKET
    ) as e:
        yield e


class Listings:
    """exchangeInfo's symbols as the test sets them (a ``ListingSource``)."""

    def __init__(self, **status: str) -> None:
        self.status = dict(status)

    def set(self, symbol: str, status: str | None) -> None:
        if status is None:
            self.status.pop(symbol, None)  # delisted: gone from exchangeInfo
        else:
            self.status[symbol] = status

    async def __call__(self) -> list[Listing]:
        quote = {"BTCUSDT": "USDT", "ETHUSDT": "USDT", "ETHBTC": "BTC"}
        return [
            Listing(s, st, s[: -len(quote[s])], quote[s], "0.01000000")
            for s, st in self.status.items()
        ]


@contextlib.asynccontextmanager
async def running(
    redis_url: str,
    emu: EmulatorProcess,
    symbols: str,
    listing: ListingSource | None = None,
    period_s: float = 3600.0,  # the tests refresh when they change the listing
) -> AsyncIterator[Service]:
    names, patterns = parse_symbol_spec(symbols)
    config = Settings(
        redis_url=redis_url,
        binance_rest_url=emu.rest_url,
        binance_ws_url=emu.ws_url,
        symbols=names,
        symbol_patterns=patterns,
        intervals=parse_intervals("1m"),
        backfill_candles=5,
        stream_silence_s=3.0,
        port=0,
        universe_period_s=period_s,
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Service] = asyncio.get_running_loop().create_future()
    roles = {"fetcher", "stream", "web"}
    task = asyncio.create_task(serve(config, roles, stop, ready.set_result, listing))
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            await task
        service = await ready
        async with asyncio.timeout(60):
            await service.exchange_ready.wait()
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(check: Callable[[], Any], within_s: float = 30.0) -> None:
    """Poll ``check`` (a reading of Redis or of the service) until it is truthy."""
    async with asyncio.timeout(within_s):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.1)


def streams_of(svc: Service) -> set[str]:
    assert svc.stream is not None
    return {s for g in svc.stream.groups for s in g.streams}


M1 = parse_interval("1m")


async def test_star_follows_every_trading_symbol_of_the_exchange(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    async with running(redis_url, market, "*") as svc:
        assert svc.universe is not None and svc.feed is not None and svc.fetcher is not None
        assert svc.universe.following == set(MARKET.split(","))
        assert set(svc.feed.states) == set(MARKET.split(","))
        assert streams_of(svc) == set(streams_for(MARKET.split(","), [M1]))
        store = Store(redis, Keys())
        for s in MARKET.split(","):  # history, then live candles, for each
            await until(lambda s=s: store.count(SeriesKey(s, M1)), 30)
            await until(lambda s=s: store.live_price(s), 30)
        stored = await store.universe()
        assert {s: (e.status, e.followed) for s, e in stored.items()} == {
            s: ("TRADING", True) for s in MARKET.split(",")
        }
        assert stored["ETHBTC"].quote == "BTC" and stored["ETHBTC"].tick_size == "0.01000000"


async def test_star_quote_selects_by_the_quote_asset(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    async with running(redis_url, market, "*USDT") as svc:
        assert svc.universe is not None and svc.feed is not None
        assert svc.universe.following == {"BTCUSDT", "ETHUSDT"}
        assert set(svc.feed.states) == {"BTCUSDT", "ETHUSDT"}
        assert not any(s.startswith("ethbtc@") for s in streams_of(svc))
        assert svc.web_url is not None
        async with httpx.AsyncClient(base_url=svc.web_url) as web:
            body = (await web.get("/api/symbols")).json()
            assert body["symbols"] == ["BTCUSDT", "ETHUSDT"]
            r = await web.get("/api/klines", params={"symbol": "ETHBTC", "interval": "1m"})
            assert r.status_code == 400 and "ETHBTC" in r.json()["error"]


async def test_an_explicit_symbol_not_trading_is_reported_not_followed(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    listing = Listings(BTCUSDT="TRADING", ETHUSDT="HALT")
    async with running(redis_url, market, "BTCUSDT,ETHUSDT", listing) as svc:
        assert svc.universe is not None and svc.feed is not None and svc.fetcher is not None
        assert svc.universe.following == {"BTCUSDT"}
        assert set(svc.feed.states) == {"BTCUSDT"}
        assert SeriesKey.of("ETHUSDT", "1m") not in svc.fetcher.series
        assert "symbol ETHUSDT is HALT on the exchange: not followed" in svc.problems()


async def test_an_explicit_symbol_the_exchange_does_not_list_is_reported_not_followed(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    listing = Listings(BTCUSDT="TRADING")
    async with running(redis_url, market, "BTCUSDT,NEVERUSDT", listing) as svc:
        assert svc.universe is not None and svc.feed is not None
        assert svc.universe.following == {"BTCUSDT"}
        assert set(svc.feed.states) == {"BTCUSDT"}
        assert svc.universe.last_error is None
        assert any("NEVERUSDT" in p for p in svc.problems())


async def test_listing_break_delisting_and_relisting_at_run_time(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    listing = Listings(BTCUSDT="TRADING")
    store = Store(redis, Keys())
    eth = SeriesKey("ETHUSDT", M1)
    async with running(redis_url, market, "*USDT", listing) as svc:
        universe, feed, fetcher = svc.universe, svc.feed, svc.fetcher
        assert universe is not None and feed is not None and fetcher is not None
        assert svc.web_url is not None
        web = httpx.AsyncClient(base_url=svc.web_url)
        assert universe.following == {"BTCUSDT"}
        r = await web.get("/api/klines", params={"symbol": "ETHUSDT", "interval": "1m"})
        assert r.status_code == 400  # not known yet

        # a new listing: history and live candles without a restart
        listing.set("ETHUSDT", "TRADING")
        await universe.refresh()
        assert "ETHUSDT" in feed.states and SeriesKey.of("ETHUSDT", "1m") in fetcher.series
        assert "ethusdt@aggTrade" in streams_of(svc)
        await until(lambda: store.count(eth), 30)
        await redis.delete(store.keys.live_price("ETHUSDT"))
        await until(lambda: store.live_price("ETHUSDT"), 30)
        r = await web.get("/api/klines", params={"symbol": "ETHUSDT", "interval": "1m"})
        assert r.status_code == 200 and r.json()["candles"]

        # a BREAK: stopped cleanly, data kept, said by /api/symbols
        listing.set("ETHUSDT", "BREAK")
        await universe.refresh()
        kept = await store.count(eth)
        assert "ETHUSDT" not in feed.states and "ETHUSDT" not in feed.live_states()
        assert SeriesKey.of("ETHUSDT", "1m") not in svc.fetcher.series
        assert eth not in fetcher.series
        assert not any(s.startswith("ethusdt@") for s in streams_of(svc))
        body = (await web.get("/api/symbols")).json()
        eth_status = next(e for e in body["status"] if e["symbol"] == "ETHUSDT")
        assert eth_status["status"] == "break" and eth_status["followed"] is False
        assert eth_status["since_ms"] > 0
        assert "ETHUSDT" in body["symbols"]  # its stored data is still served
        r = await web.get("/api/klines", params={"symbol": "ETHUSDT", "interval": "1m"})
        assert r.status_code == 200 and len(r.json()["candles"]) >= kept
        assert await store.count(eth) == kept
        assert svc.healthy

        # delisted: gone from exchangeInfo
        listing.set("ETHUSDT", None)
        await universe.refresh()
        body = (await web.get("/api/symbols")).json()
        eth_status = next(e for e in body["status"] if e["symbol"] == "ETHUSDT")
        assert eth_status["status"] == "delisted" and eth_status["followed"] is False
        r = await web.get("/api/klines", params={"symbol": "NEVERUSDT", "interval": "1m"})
        assert r.status_code == 400 and "NEVERUSDT" in r.json()["error"]

        # re-listed: followed again, from where its data stops
        listing.set("ETHUSDT", "TRADING")
        await universe.refresh()
        assert "ETHUSDT" in feed.states and SeriesKey.of("ETHUSDT", "1m") in fetcher.series
        assert "ethusdt@aggTrade" in streams_of(svc)
        await redis.delete(store.keys.live_price("ETHUSDT"))
        await until(lambda: store.live_price("ETHUSDT"), 30)
        body = (await web.get("/api/symbols")).json()
        eth_status = next(e for e in body["status"] if e["symbol"] == "ETHUSDT")
        assert eth_status["status"] == "trading" and eth_status["followed"] is True
        await web.aclose()


async def test_a_web_process_apart_serves_the_stored_universe(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    listing = Listings(BTCUSDT="TRADING", ETHUSDT="TRADING", ETHBTC="TRADING")
    async with running(redis_url, market, "*USDT", listing):
        pass  # the universe is stored; now a web alone, with the same configuration
    names, patterns = parse_symbol_spec("*USDT")
    config = Settings(
        redis_url=redis_url,
        symbols=names,
        symbol_patterns=patterns,
        port=0,
        intervals=parse_intervals("1m"),
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Service] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, {"web"}, stop, ready.set_result))
    try:
        svc = await asyncio.wait_for(ready, 30)
        async with httpx.AsyncClient(base_url=str(svc.web_url)) as web:
            body = (await web.get("/api/symbols")).json()
            assert body["symbols"] == ["BTCUSDT", "ETHUSDT"]
            assert {e["symbol"]: e["status"] for e in body["status"]} == {
                "BTCUSDT": "trading",
                "ETHUSDT": "trading",
            }
            r = await web.get("/api/v3/exchangeInfo")
            assert [s["symbol"] for s in r.json()["symbols"]] == ["BTCUSDT", "ETHUSDT"]
            spec = (await web.get("/openapi.json")).json()
            params = spec["paths"]["/api/klines"]["get"]["parameters"]
            symbol = next(p for p in params if p["name"] == "symbol")
            assert "enum" not in symbol["schema"]  # the served symbols change at run time
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_the_listing_is_re_read_every_period_without_being_asked(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> None:
    listing = Listings(BTCUSDT="TRADING")
    async with running(redis_url, market, "*", listing, period_s=0.2) as svc:
        feed = svc.feed
        assert feed is not None and svc.universe is not None
        listing.set("ETHBTC", "TRADING")
        await until(lambda: "ETHBTC" in feed.states, 10)
        listing.set("BTCUSDT", "END_OF_DAY")
        await until(lambda: "BTCUSDT" not in feed.states, 10)
        assert svc.universe.entries["BTCUSDT"].status == "END_OF_DAY"
