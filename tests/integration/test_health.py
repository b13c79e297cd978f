"""/healthz tells the truth: degraded while REST calls fail, requests are paused by the
exchange or a symbol's stream is silent; ok again once that is over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service


async def health_until(
    web_url: str, predicate: Callable[[dict[str, Any]], bool], within_s: float
) -> dict[str, Any]:
    """The first /healthz body satisfying ``predicate`` (polled: health is a reading)."""
    async with httpx.AsyncClient(base_url=web_url) as client, asyncio.timeout(within_s):
        while True:
            r = await client.get("/healthz")
            assert r.status_code == 200
            body: dict[str, Any] = r.json()
            if predicate(body):
                return body
            await asyncio.sleep(0.2)


def ok(body: dict[str, Any]) -> bool:
    return bool(body["status"] == "ok")


def degraded_by(text: str) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        return body["status"] == "degraded" and any(text in p for p in body["problems"])

    return check


async def test_rest_5xx_make_health_degraded_until_they_stop(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with running_service(redis_url, emulator, "1s", roles=("fetcher", "web"), port=0) as svc:
        assert svc.web_url is not None
        await health_until(svc.web_url, ok, 20)
        await asyncio.to_thread(emulator.control, fail_rate=1.0)
        body = await health_until(svc.web_url, degraded_by("HTTP 502"), 10)
        assert body["exchange"]["rest_failing"] is True
        assert "REST calls to the exchange are failing" in body["problems"][0]
        await asyncio.to_thread(emulator.control, fail_rate=0.0)
        body = await health_until(svc.web_url, ok, 30)
        assert body["problems"] == [] and body["exchange"]["rest_failing"] is False


async def test_a_429_pause_makes_health_degraded_with_its_reason(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with running_service(redis_url, emulator, "1s", roles=("fetcher", "web"), port=0) as svc:
        assert svc.web_url is not None
        await health_until(svc.web_url, ok, 20)
        await asyncio.to_thread(emulator.control, weight_limit=1)
        body = await health_until(svc.web_url, degraded_by("HTTP 429"), 10)
        blocked = body["exchange"]["blocked"]
        assert blocked["until_ms"] > body["exchange"]["blocked_until_ms"] - 1
        assert "HTTP 429" in blocked["reason"]
        assert any(p.startswith("REST requests paused for") for p in body["problems"])


async def test_a_stalled_symbol_makes_health_degraded_naming_it(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with running_service(
        redis_url, emulator, "1m", roles=("stream", "web"), port=0, stream_silence_s=2.0
    ) as svc:
        assert svc.web_url is not None
        await health_until(svc.web_url, ok, 20)
        # the stall of a symbol the service knows to be busy, whose silence is asked about
        # after stream_silence_s: a fresh emulator's history trades sparsely, and its
        # first snapshot (1 trade in 5 s) makes ETHUSDT look quiet (asked about after ten
        # of its gaps, ~50 s) until its live trades have moved that guess
        await health_until(
            svc.web_url, lambda b: b["stream"]["symbols"]["ETHUSDT"]["look_after_s"] == 2.0, 20
        )
        await asyncio.to_thread(emulator.control, stall={"symbol": "ETHUSDT", "seconds": 6})
        body = await health_until(svc.web_url, degraded_by("stream of ETHUSDT stalled"), 10)
        assert not any("BTCUSDT" in p for p in body["problems"])
        await health_until(svc.web_url, ok, 20)


async def test_a_web_node_says_when_a_process_running_apart_stops_beating(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as web:
        assert web.web_url is not None
        async with running_service(redis_url, emulator, "1m", roles=("stream",)):
            body = await health_until(web.web_url, lambda b: b["stream"] is not None, 20)
            assert body["status"] == "ok"
        # the stream process is gone; its last beat would lapse with its TTL: end it now
        await redis.delete(web.store.keys.health("stream"))
        body = await health_until(web.web_url, degraded_by("no heartbeat from the stream"), 5)
        assert body["stream"] is None
