"""Exchange storms under the whole service with live 1s candles (issue 13): a 5xx storm, a
429 storm with ``Retry-After`` whatever the weight, a 418 ban, every stream cut at once
(Binance's 24 h cut, all connections together) and a stalled stream. Each: shown in
``/healthz`` while it lasts, never a ban of our making (418s counted), recovery without a
restart, no official row lost and ``verify`` clean; after the stream faults every closed
live candle equals the exchange's row. ``test_health.py`` (health during 5xx and 429),
``test_rate_limit.py`` (a lowered limit) and ``test_stream_client.py`` (one client's cuts
and stalls) cover the parts alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis

from livecandle.official.integrity import verify
from livecandle.runtime.service import Service
from livecandle.store import Store
from livecandle.store.codec import live_row
from tests.helpers import EmulatorProcess
from tests.integration.live_support import LiveRecorder, official, running_service
from tests.integration.test_redis_trouble import (
    SERIES,
    caught_up,
    contiguous,
    health,
    not_crash_looping,
    now_ms,
    until,
)

ROLES = ("fetcher", "stream", "web")


@contextlib.asynccontextmanager
async def whole_service(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, Store]]:
    async with (
        running_service(redis_url, emulator, "1s", roles=ROLES, port=0) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=10) as web,
    ):
        store = Store(redis)
        await until(lambda: caught_up(store, now_ms()), 30)
        yield svc, web, store


async def stall_one(emulator: EmulatorProcess) -> None:
    """The stream's final candles are official: with a symbol's stream stalled, its
    candles (and missed trades) must come over REST, which the storm answers."""
    await asyncio.to_thread(emulator.control, stall={"symbol": "ETHUSDT", "seconds": 5})


async def shown(web: httpx.AsyncClient, text: str) -> bool:
    _, body = await health(web)
    return body["status"] == "degraded" and any(text in p for p in body["problems"])


async def recovered(web: httpx.AsyncClient, store: Store) -> dict[str, Any]:
    """Waits for the official rows to reach now and /healthz to say ok; checks nothing
    was lost and no task is crash-looping; returns the final /healthz body."""
    await until(lambda: caught_up(store, now_ms()), 30)

    async def ok() -> bool:
        return (await health(web))[1]["status"] == "ok"

    await until(ok, 20)
    _, body = await health(web)
    assert not_crash_looping(body) == [], body["tasks"]
    started = time.monotonic()

    async def whole() -> bool:
        return await contiguous(store) == {str(s): 0 for s in SERIES}

    await until(whole, 30)  # holes the storm left are filled over REST
    print(f"holes filled {time.monotonic() - started:.1f} s after /healthz said ok")
    report = await verify(store, SERIES, now_ms())
    assert report.ok, report.text()
    return body


async def test_a_5xx_storm_is_shown_then_recovered_with_no_row_lost(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with whole_service(redis_url, redis, emulator) as (_, web, store):
        await asyncio.to_thread(emulator.control, fail_rate=1.0)
        await stall_one(emulator)  # so that candles must come over REST
        await until(lambda: shown(web, "HTTP 502"), 15)
        await asyncio.sleep(5)  # 1s candles close while every REST call fails
        await asyncio.to_thread(emulator.control, fail_rate=0.0)
        ended = time.monotonic()
        await recovered(web, store)
        state = await asyncio.to_thread(emulator.state)
        assert state["failed"] > 0 and state["rejected_418"] == 0
        print(f"5xx storm: {state['failed']} failed; recovered in {time.monotonic() - ended:.1f} s")


async def test_a_429_storm_is_waited_out_as_told_and_never_becomes_a_ban(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with whole_service(redis_url, redis, emulator) as (svc, web, store):
        limit_before = svc.rest.budget.limit
        ended = time.monotonic() + 5  # the storm's end
        await asyncio.to_thread(emulator.control, storm_429_s=5)
        await stall_one(emulator)  # so that candles must come over REST
        await until(lambda: shown(web, "HTTP 429"), 10)
        _, body = await health(web)
        assert body["exchange"]["blocked"] is not None
        await recovered(web, store)
        state = await asyncio.to_thread(emulator.state)
        # the 429 answers the requests in flight got (two at most in flight), then silence
        assert 1 <= state["rejected_429"] <= 2, state
        assert state["rejected_418"] == 0
        # the storm's 429s state the usual limit, not reached: no lower limit learned
        assert svc.rest.budget.limit == limit_before
        print(
            f"429 storm of 5 s: {state['rejected_429']} 429s, 0 418s; recovered "
            f"{time.monotonic() - ended:.1f} s after its end; learned weight limit "
            f"{limit_before} -> {svc.rest.budget.limit}"
        )


async def test_a_418_ban_stops_every_request_until_it_ends_then_recovers(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with whole_service(redis_url, redis, emulator) as (_, web, store):
        ended = time.monotonic() + 5  # the ban's end
        await asyncio.to_thread(emulator.control, ban_s=5)
        await stall_one(emulator)  # so that candles must come over REST
        await until(lambda: shown(web, "HTTP 418"), 10)
        await recovered(web, store)
        state = await asyncio.to_thread(emulator.state)
        assert 1 <= state["rejected_418"] <= 2, state  # only the requests in flight
        print(
            f"418 ban of 5 s: {state['rejected_418']} requests answered 418; recovered "
            f"{time.monotonic() - ended:.1f} s after its end"
        )


async def test_every_stream_cut_at_once_and_a_stall_lose_no_trade(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with (
        whole_service(redis_url, redis, emulator) as (svc, web, store),
        LiveRecorder(redis) as rec,
    ):
        assert svc.stream is not None
        # the live feed goes before the cut: every symbol's candle holds all its trades
        # (official rows caught up say nothing of it: the stream's first trades may come
        # later, and a start-up candle, lacking the trades before them, is incomplete)
        await rec.wait_for(
            lambda: (
                {c["symbol"] for c in rec.forming if c["complete"]} >= {s.symbol for s in SERIES}
            ),
            15,
        )
        reconnects = svc.stream.reconnects
        cut_ms = now_ms()
        await asyncio.to_thread(emulator.control, drop_connections=True)
        await asyncio.sleep(2)
        await asyncio.to_thread(emulator.control, stall={"symbol": "ETHUSDT", "seconds": 5})
        stall_ends = time.monotonic() + 5
        await until(lambda: shown(web, "stream of ETHUSDT stalled"), 10)
        await recovered(web, store)
        recover_s = time.monotonic() - stall_ends
        assert svc.stream.reconnects > reconnects
        # every live candle announced closed since the cut is the exchange's row, exactly
        # (a gap fill replays several seconds at once: its closes are coalesced, newest
        # state wins; the official rows, checked above, have every second)
        done_ms = now_ms() - 2000
        await rec.wait_for(
            lambda: all(
                any(k[0] == s.symbol and k[2] >= done_ms for k in rec.closed) for s in SERIES
            ),
            15,
        )
        closed = {k: c for k, c in rec.closed.items() if cut_ms <= k[2] < done_ms}
        assert {k[0] for k in closed} == {s.symbol for s in SERIES}
        assert [k for k, c in closed.items() if not c["complete"]] == []
        for (symbol, interval, open_ms), c in closed.items():
            assert live_row(c) == await official(emulator, symbol, interval, open_ms)
        print(
            f"every stream cut + a 5 s stall: {len(closed)} closed live candles exact, "
            f"{svc.stream.reconnects - reconnects} reconnects, ok again {recover_s:.1f} s "
            "after the stall"
        )
