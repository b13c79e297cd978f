"""socket.io clients that stop draining their queue: bounded and disconnected, while a
normal client keeps receiving. Raw engine.io long-polling over real HTTP (httpx)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import redis.asyncio as aioredis
import socketio

from livecandle.domain.model import SeriesKey
from livecandle.store import LiveWrite, Store
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service

SERIES = (("BTCUSDT", "1m"), ("ETHUSDT", "1m"))


class PollingClient:
    """An engine.io v4 long-polling client that sends but never polls for what it is sent."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.sid = ""

    async def open(self) -> None:
        r = await self.http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert r.status_code == 200 and r.text.startswith("0"), r.text
        self.sid = msgspec.json.decode(r.text[1:])["sid"]
        assert (await self.post("40")) == 200

    async def post(self, *packets: str) -> int:
        r = await self.http.post(
            "/socket.io/",
            params={"EIO": "4", "transport": "polling", "sid": self.sid},
            content="\x1e".join(packets),
        )
        return r.status_code


def subscribe(symbol: str, interval: str, ack_id: str = "") -> str:
    body = msgspec.json.encode(["subscribe", {"symbol": symbol, "interval": interval}])
    return "42" + ack_id + body.decode()


@contextlib.asynccontextmanager
async def live_updates(redis: aioredis.Redis) -> AsyncIterator[list[int]]:
    """Live batches for every series, published through the Store as fast as Redis takes
    them (hundreds a second); yields [the number published so far]."""
    store = Store(redis)
    published = [0]

    async def run() -> None:
        while True:
            i = published[0]
            candles: list[dict[str, Any]] = [
                {
                    "symbol": symbol,
                    "interval": interval,
                    "time": 1_700_000_040_000,
                    "close": f"{100 + i}.00000000",
                    "source": "live",
                    "previous": None,
                }
                for symbol, interval in SERIES
            ]
            prices = [{"symbol": s, "price": f"{100 + i}.00000000", "time": i} for s, _ in SERIES]
            batch = {"time": i, "prices": prices, "candles": candles}
            writes = [
                LiveWrite(SeriesKey.of(c["symbol"], c["interval"]), msgspec.json.encode(c))
                for c in candles
            ]
            await store.write_live(writes, publish=msgspec.json.encode(batch))
            published[0] += 1
            await asyncio.sleep(0.002)  # pacing of the load, not a wait for an event

    task = asyncio.create_task(run())
    try:
        yield published
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def realtime_health(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.get("/healthz")
    return msgspec.json.decode(r.content)["realtime"]  # type: ignore[no-any-return]


async def test_a_polling_client_that_never_polls_is_bounded_then_disconnected(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with (
        running_service(
            redis_url, emulator, "1m", roles=("web",), port=0, realtime_stall_s=2.0
        ) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=10) as http,
    ):
        normal = socketio.AsyncClient(reconnection=False)
        closes: list[str] = []
        got = asyncio.Event()

        async def on_live_candle(data: dict[str, Any]) -> None:
            closes.append(data["candle"]["close"])
            got.set()

        normal.on("live_candle", on_live_candle)
        await normal.connect(svc.web_url, transports=["websocket"])
        await normal.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})

        slow = PollingClient(http)
        await slow.open()
        assert await slow.post(*(subscribe(s, i) for s, i in SERIES)) == 200
        async with live_updates(redis) as published:
            longest = 0
            async with asyncio.timeout(20):
                # keep its session alive with pongs, as the attacker did; never GET
                while await slow.post("3") == 200:
                    longest = max(longest, (await realtime_health(http))["longest_queue"])
                    await asyncio.sleep(0.2)  # the attacker's pace
            assert published[0] > 200  # updates really flowed while it was connected
            realtime = await realtime_health(http)
            assert realtime["slow_clients_dropped"] == 1
            assert realtime["clients"] == 1  # the normal one
            # live updates coalesce per room: the queue never grew with the update rate
            assert longest <= 2 * len(SERIES) + 2, longest
            # the normal client still receives new states after the slow one was dropped
            got.clear()
            seen = len(closes)
            async with asyncio.timeout(10):
                while len(closes) < seen + 3:
                    await got.wait()
                    got.clear()
        metrics = (await http.get("/metrics")).text
        assert "livecandle_socketio_slow_clients_dropped_total 1" in metrics
        await normal.disconnect()


async def test_a_client_that_never_reads_its_answers_is_disconnected_at_the_queue_bound(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with (
        running_service(
            redis_url, emulator, "1m", roles=("web",), port=0, realtime_max_queue=64
        ) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=10) as http,
    ):
        slow = PollingClient(http)
        await slow.open()
        # each bad subscribe with an ack id queues an error event and an ack: nothing
        # coalesces these, so the bound is what stops them
        statuses = []
        for n in range(10):
            bad = [subscribe("NOPE", "1m", ack_id=str(n * 16 + k)) for k in range(16)]
            statuses.append(await slow.post(*bad))
        assert statuses[0] == 200
        assert await slow.post("3") == 400  # its session is gone
        realtime = await realtime_health(http)
        assert realtime["slow_clients_dropped"] == 1
        assert realtime["clients"] == 0
        assert realtime["longest_queue"] == 0

        normal = socketio.AsyncClient(reconnection=False)
        await normal.connect(svc.web_url, transports=["websocket"])
        ack = await normal.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        assert ack == {"ok": True, "room": "BTCUSDT:1m"}
        await normal.disconnect()
