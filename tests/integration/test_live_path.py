"""The live path end to end: emulator websocket -> stream -> builder -> Redis."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import redis.asyncio as aioredis

from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from livecandle.store.codec import live_row
from tests.helpers import EmulatorProcess
from tests.integration.live_support import (
    LiveRecorder,
    official,
    running_service,
)


async def test_seed_case_1_a_live_price_updates_the_forming_candle(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with running_service(redis_url, emulator, "1m,1h") as svc, LiveRecorder(redis) as rec:
        # BTCUSDT's candles go out with its keys, its price key too once a price of it
        # went out: three such batches after its first price (ETHUSDT's say nothing)
        def btc_batches_after_a_price() -> int:
            priced, n = False, 0
            for b in rec.batches:
                n += priced and any(c["symbol"] == "BTCUSDT" for c in b["candles"])
                priced = priced or any(p["symbol"] == "BTCUSDT" for p in b["prices"])
            return n

        await rec.wait_for(lambda: btc_batches_after_a_price() >= 3, 30)
        # one read of the three keys (written together: one moment's state)
        raw = await redis.mget(
            "live_price:BTCUSDT", "live_candle:BTCUSDT:1m", "live_candle:BTCUSDT:1h"
        )
        price = msgspec.json.decode(raw[0])
        assert set(price) == {"symbol", "price", "time"}
        for interval, value in zip(("1m", "1h"), raw[1:], strict=True):
            live = msgspec.json.decode(value)
            assert live["source"] == "live" and live["is_incomplete"] is True
            assert Decimal(live["low"]) <= Decimal(live["close"]) <= Decimal(live["high"])
            # the price's period, or a newer one the clock opened without a trade yet
            assert live["time"] <= price["time"] or live["trades"] == 0, (live, price)
            assert price["time"] <= live["close_time"]
            ttl = await redis.pttl(f"live_candle:BTCUSDT:{interval}")
            assert 86_000_000 < ttl <= 86_400_000
        # every forming candle closes at a live price of its symbol. Prices have
        # messages of their own, published beside the candles' flushes, so that is the
        # newest price published before it, or one published after it (the price
        # catching up), or an older one: candles on their way while a newer price went
        # out; then that newer price is published again after them
        # (test_live_writer.py: ..._goes_out_again_after_them)
        published: dict[str, set[str]] = {}  # each symbol's prices
        for batch in rec.batches:
            for p in batch["prices"]:
                published.setdefault(p["symbol"], set()).add(p["price"])
        priced: set[str] = set()
        checked = 0
        for batch in rec.batches:
            priced.update(p["symbol"] for p in batch["prices"])
            for c in batch["candles"]:
                if c["symbol"] in priced:
                    assert c["close"] in published[c["symbol"]], c
                    checked += 1
        assert checked >= 6  # 2 intervals x 3 batches with candles
        assert svc.feed is not None and svc.feed.stats()["bad_messages"] == 0
        assert await redis.zcard("klines_z:BTCUSDT:1m") >= 4  # official history, apart


async def test_seed_case_3_the_next_period_replaces_the_live_candle_and_official_follows(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with running_service(redis_url, emulator, "1s"), LiveRecorder(redis) as rec:

        def complete() -> list[tuple[str, str, int]]:
            return sorted(k for k, c in rec.closed.items() if c["complete"])

        await rec.wait_for(lambda: len(complete()) >= 2, 30)
        (symbol, _, first_closed) = complete()[0]
        # the live key now holds a later period, with the closed one as `previous` (keys
        # are set every write period, 100 ms, after the faster pub/sub batches)
        async with asyncio.timeout(2):
            while True:
                live = msgspec.json.decode(await redis.get(f"live_candle:{symbol}:1s"))
                if live["time"] > first_closed:
                    break
                await asyncio.sleep(0.02)
        assert live["previous"]["confirmed"] is False
        # the closed period's official candle arrives within seconds
        await rec.wait_for(lambda: rec.official_latest.get((symbol, "1s"), 0) >= first_closed, 10)
        assert ((await Store(redis).meta(SeriesKey.of(symbol, "1s"))).latest or 0) >= (first_closed)
        member = await redis.zrangebyscore(f"klines_z:{symbol}:1s", first_closed, first_closed)
        assert len(member) == 1
        off = msgspec.json.decode(member[0])
        assert off == await official(emulator, symbol, "1s", first_closed)
        assert live_row(rec.closed[(symbol, "1s", first_closed)]) == off


async def test_a_web_process_apart_reports_the_stream_and_fetcher_health(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    import httpx

    async with (
        running_service(redis_url, emulator, "1m", roles=("fetcher", "stream")),
        running_service(redis_url, emulator, "1m", roles=("web",), port=0) as web,
        LiveRecorder(redis) as rec,
    ):
        await rec.wait_for(lambda: len(rec.prices) >= 1, 30)
        async with httpx.AsyncClient(base_url=str(web.web_url)) as client:
            async with asyncio.timeout(20):
                while True:  # the beat is written every few seconds
                    health = (await client.get("/healthz")).json()
                    stream = health.get("stream") or {}
                    btc = stream.get("symbols", {}).get("BTCUSDT", {})
                    if btc.get("last_agg_id") is not None and health.get("fetcher"):
                        break
                    await asyncio.sleep(0.2)
    assert health["stream"]["symbols"]["BTCUSDT"]["last_agg_id"] is not None
    assert "BTCUSDT:1m" in health["fetcher"]["series"]


async def test_without_official_data_every_closed_live_candle_stays_served(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    """No fetcher: only the stream's final klines confirm closed candles (official), the
    live ones after them are served unconfirmed, and still no hole."""
    import httpx

    async with (
        running_service(redis_url, emulator, "1s", roles=("stream", "web"), port=0) as svc,
        LiveRecorder(redis) as rec,
    ):
        await rec.wait_for(lambda: sum(1 for k in rec.closed if k[0] == "BTCUSDT") >= 5, 30)
        async with httpx.AsyncClient(base_url=str(svc.web_url)) as web:
            body = (
                await web.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1s"})
            ).json()
            binance = (
                await web.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1s"})
            ).json()
    rows = body["candles"]
    latest = body["latest"]
    assert latest is not None  # the stream's finals, with no fetcher
    times = [r[0] for r in rows]
    assert len(rows) >= 5
    assert {r[12] for r in rows if r[0] <= latest} == {"official"}
    # the forming one last, unless the read fell in the (at most one write period) after a
    # close and before the next live_candle write: then the closed one is the newest
    # (already official if its final was stored)
    assert {r[12] for r in rows[:-1] if r[0] > latest} <= {"unconfirmed"}
    assert rows[-1][12] in ("forming", "unconfirmed", "official")
    assert times == list(range(times[0], times[-1] + 1, 1000))  # every second, no hole
    assert [r[0] for r in binance][-len(times) :] == times
    # each unconfirmed one is the final version the live path published; each official one
    # equals it too where the live candle saw the whole period (not the first, partial one)
    for r in rows[:-1]:
        seen = rec.closed.get(("BTCUSDT", "1s", r[0]))
        if seen is not None and (r[12] == "unconfirmed" or seen["complete"]):
            assert r[:11] == live_row(seen)[:11]
