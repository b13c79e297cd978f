"""socket.io with a real python-socketio client over websocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
import socketio

from livecandle.domain.model import SeriesKey
from livecandle.store import LiveWrite, Store
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service


class Client:
    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        for name in ("live_price", "live_candle", "klines_updated", "error"):
            self.sio.on(name, self._handler(name))

    def _handler(self, name: str) -> Any:
        async def handle(data: Any) -> None:
            self.events.append((name, data))
            self.changed.set()

        return handle

    async def wait(self, predicate: Any, within_s: float = 10) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def of(self, name: str) -> list[Any]:
        return [d for n, d in self.events if n == name]


@pytest.fixture
async def client_factory() -> AsyncIterator[Any]:
    clients: list[Client] = []

    async def make(url: str) -> Client:
        c = Client()
        await c.sio.connect(url, transports=["websocket"])
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.sio.disconnect()


async def test_a_client_gets_live_events_of_its_room_only(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess, client_factory: Any
) -> None:
    async with running_service(
        redis_url, emulator, "1m,5m", roles=("fetcher", "stream", "web"), port=0
    ) as svc:
        c = await client_factory(svc.web_url)
        ack = await c.sio.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        assert ack == {"ok": True, "room": "BTCUSDT:1m"}
        await c.wait(lambda: len(c.of("live_price")) >= 3 and len(c.of("live_candle")) >= 3)
        assert {p["symbol"] for p in c.of("live_price")} == {"BTCUSDT"}
        assert {(x["symbol"], x["interval"]) for x in c.of("live_candle")} == {("BTCUSDT", "1m")}
        candle = c.of("live_candle")[-1]["candle"]
        assert candle["source"] == "live" and candle["is_incomplete"] is True
        await c.sio.call("unsubscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        await asyncio.sleep(0.3)  # in-flight emissions drain
        n = len(c.events)
        await asyncio.sleep(1.0)  # none should come now: nothing to await but silence
        assert len(c.events) == n, c.events[n:]


async def test_unknown_pairs_get_an_error_and_the_connection_lives_on(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess, client_factory: Any
) -> None:
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc:
        c = await client_factory(svc.web_url)
        for bad in (
            {"symbol": "NOPE", "interval": "1m"},
            {"symbol": "BTCUSDT", "interval": "2m"},
            {"symbol": "BTCUSDT", "interval": "1h"},
            "BTCUSDT",
            None,
            {"symbol": 5, "interval": []},
        ):
            ack = await c.sio.call("subscribe", bad)
            assert ack["ok"] is False and ack["error"], (bad, ack)
        ack = await c.sio.call("subscribe", ({"symbol": "BTCUSDT", "interval": "1m"}, "extra"))
        assert ack["ok"] is False and "one argument" in ack["error"], ack
        ack = await c.sio.call("unsubscribe", ({"symbol": "BTCUSDT", "interval": "1m"}, 1))
        assert ack["ok"] is False, ack
        await c.wait(lambda: len(c.of("error")) >= 8)
        assert "NOPE" in c.of("error")[0]["error"]
        ack = await c.sio.call("subscribe", {"symbol": "ETHUSDT", "interval": "1m"})
        assert ack["ok"] is True


async def test_bursts_are_throttled_per_room_and_the_newest_wins(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess, client_factory: Any
) -> None:
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc:
        c = await client_factory(svc.web_url)
        await c.sio.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        store = Store(redis)
        series = SeriesKey.of("BTCUSDT", "1m")
        started = time.monotonic()
        for i in range(300):  # 300 updates as fast as Redis takes them
            value = {
                "symbol": "BTCUSDT",
                "interval": "1m",
                "time": 1_700_000_040_000,
                "close": f"{100 + i}.00000000",
                "source": "live",
                "previous": None,
            }
            enc = msgspec.json.encode(value)
            batch = msgspec.json.encode({"time": i, "prices": [], "candles": [value]})
            await store.write_live([LiveWrite(series, enc)], publish=batch)
        elapsed = time.monotonic() - started
        await c.wait(
            lambda: (
                bool(c.of("live_candle"))
                and c.of("live_candle")[-1]["candle"]["close"] == "399.00000000"
            )
        )
        received = len(c.of("live_candle"))
        period = svc.settings.live_publish_period_ms / 1000  # the room throttle
        assert received <= elapsed / period + 3, (received, elapsed)
        assert received < 300


async def test_a_price_newer_than_a_candle_is_emitted_after_it(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess, client_factory: Any
) -> None:
    """Within one emit period, in Redis's order: a price, candles whose close is older
    (on their way while that price went out), and the price again (the writer sends it
    after such candles). Each room's newest event is emitted, in the order of the newest
    events: the client's candle ends at the newest price, not at the older close."""
    async with running_service(
        redis_url, emulator, "1m", roles=("web",), port=0, live_publish_period_ms=300
    ) as svc:
        c = await client_factory(svc.web_url)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            await c.sio.call("subscribe", {"symbol": symbol, "interval": "1m"})
        channel = Store(redis).keys.live_channel
        t = 1_700_000_040_000

        def batch(prices: list[Any], candles: list[Any]) -> bytes:
            return msgspec.json.encode({"time": t, "prices": prices, "candles": candles})

        def price(symbol: str, p: str, time_ms: int) -> dict[str, Any]:
            return {"symbol": symbol, "price": p, "time": time_ms}

        candle = {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "time": t,
            "close": "101.00000000",
            "source": "live",
            "previous": None,
        }
        await redis.publish(channel, batch([price("BTCUSDT", "100.00000000", t)], []))
        await c.wait(lambda: bool(c.of("live_price")))  # an emit period begins
        async with redis.pipeline(transaction=False) as pipe:
            pipe.publish(channel, batch([price("BTCUSDT", "102.00000000", t + 2)], []))
            pipe.publish(channel, batch([], [candle]))
            pipe.publish(channel, batch([price("BTCUSDT", "102.00000000", t + 2)], []))
            pipe.publish(channel, batch([price("ETHUSDT", "1.00000000", t + 3)], []))  # the end
            await pipe.execute()
        await c.wait(lambda: any(p["symbol"] == "ETHUSDT" for p in c.of("live_price")))
        btc = [
            (name, data["price"] if name == "live_price" else data["candle"]["close"])
            for name, data in c.events
            if data.get("symbol") == "BTCUSDT"
        ]
        assert btc[0] == ("live_price", "100.00000000")
        assert btc[-2:] == [("live_candle", "101.00000000"), ("live_price", "102.00000000")]


async def test_a_client_that_polls_gets_a_symbol_s_events_in_the_order_of_the_newest(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess, client_factory: Any
) -> None:
    """A long-polling client (its events wait in its queue between polls, as a lagging
    client's do) is sent, in three emit periods, a price, a candle whose close is older
    than the next price, and that next price. Its next poll answers the candle, then the
    price: not the newer price in the older one's place, ahead of the candle."""
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc:
        assert svc.web_url is not None
        watcher = await client_factory(svc.web_url)  # a websocket client: sees each emit
        await watcher.sio.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        async with httpx.AsyncClient(base_url=svc.web_url, timeout=10) as http:
            base = {"EIO": "4", "transport": "polling"}

            async def poll(sid: str) -> list[Any]:
                r = await http.get("/socket.io/", params={**base, "sid": sid})
                assert r.status_code == 200, r.text
                # events ("42[...]") and acks ("43<id>[...]"), in the order sent
                packets = [p for p in r.text.split("\x1e") if p[:2] in ("42", "43")]
                return [json.loads(p[2:].lstrip("0123456789")) for p in packets]

            async def send(sid: str, packet: str) -> None:
                r = await http.post("/socket.io/", params={**base, "sid": sid}, content=packet)
                assert r.status_code == 200 and r.text == "OK", r.text

            r = await http.get("/socket.io/", params=base)
            sid = json.loads(r.text[1:])["sid"]
            await send(sid, "40")
            await poll(sid)  # the namespace's connect
            await send(sid, '420["subscribe",{"symbol":"BTCUSDT","interval":"1m"}]')
            assert (await poll(sid))[0][0]["ok"] is True
            channel = Store(redis).keys.live_channel
            t = 1_700_000_040_000
            price = {"symbol": "BTCUSDT", "time": t}
            candle = {"symbol": "BTCUSDT", "interval": "1m", "time": t, "source": "live"}
            for prices, candles in (
                ([{**price, "price": "100.00000000"}], []),
                ([], [{**candle, "close": "100.00000000", "previous": None}]),
                ([{**price, "price": "102.00000000", "time": t + 2}], []),
            ):
                seen = len(watcher.events)
                batch = {"time": t, "prices": prices, "candles": candles}
                await redis.publish(channel, msgspec.json.encode(batch))
                await watcher.wait(lambda seen=seen: len(watcher.events) > seen)  # emitted
            got = [
                (name, data["price"] if name == "live_price" else data["candle"]["close"])
                for name, data in await poll(sid)
            ]
            assert got == [("live_candle", "100.00000000"), ("live_price", "102.00000000")]


async def test_klines_updated_reaches_the_series_room(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess, client_factory: Any
) -> None:
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc:
        c = await client_factory(svc.web_url)
        await c.sio.call("subscribe", {"symbol": "ETHUSDT", "interval": "1m"})
        member = msgspec.json.encode(
            [
                1_700_000_040_000,
                "1.00000000",
                "1.00000000",
                "1.00000000",
                "1.00000000",
                "0.00000000",
                1_700_000_099_999,
                "0.00000000",
                0,
                "0.00000000",
                "0.00000000",
                "0",
            ]
        )
        await Store(redis).write_candles(
            SeriesKey.of("ETHUSDT", "1m"), [(1_700_000_040_000, member)], 1
        )
        await c.wait(lambda: bool(c.of("klines_updated")))
        assert c.of("klines_updated")[0]["latest"] == 1_700_000_040_000
