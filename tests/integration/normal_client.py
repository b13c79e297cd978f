"""The normal client of the attack tests, run as its own process
(``python -m tests.integration.normal_client WEB_URL REDIS_URL``): publishes live
updates, reads ``/api/klines`` every 50 ms and receives BTCUSDT 1m live updates; says
``ready`` once subscribed, and on a line from stdin prints what it saw as one JSON line
(``read_s``, ``statuses``, ``updates_s``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import httpx
import msgspec
import redis.asyncio as aioredis
import socketio

from tests.integration.test_slow_clients import live_updates


async def main(web_url: str, redis_url: str) -> None:
    read_s: list[float] = []
    statuses: list[int] = []
    updates_s: list[float] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("live_candle", lambda data: updates_s.append(time.monotonic()))
    await sio.connect(web_url, transports=["websocket"])
    ack = await sio.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
    assert ack["ok"], ack

    async def read(http: httpx.AsyncClient) -> None:
        while True:
            t = time.monotonic()
            r = await http.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
            read_s.append(time.monotonic() - t)
            statuses.append(r.status_code)
            await asyncio.sleep(0.05)  # the normal client's pace

    redis = aioredis.Redis.from_url(redis_url)
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http, live_updates(redis):
        task = asyncio.create_task(read(http))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await sio.disconnect()
    await redis.aclose()
    seen = {"read_s": read_s, "statuses": statuses, "updates_s": updates_s}
    print(msgspec.json.encode(seen).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
