"""Fan-out (issue 13): a room's update is framed once and written straight to every
websocket client that has nothing waiting; the order of what a client receives and the
per-client limits (issue 14) hold. Real uvicorn, real websockets, real Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as aioredis
import socketio
import uvicorn

from livecandle.domain.clock import SystemClock
from livecandle.domain.intervals import INTERVALS
from livecandle.runtime import http_server
from livecandle.store import Store
from livecandle.web.client_queue import ClientQueue
from livecandle.web.realtime import Realtime


@contextlib.asynccontextmanager
async def realtime_server(redis: aioredis.Redis, **limits: Any) -> AsyncIterator[Realtime]:
    """The socket.io app alone, on uvicorn (its default websocket protocol)."""
    realtime = Realtime(
        Store(redis), ["BTCUSDT", "ETHUSDT"], [INTERVALS["1m"]], SystemClock(), **limits
    )
    config = uvicorn.Config(
        socketio.ASGIApp(realtime.sio), host="127.0.0.1", port=0, log_level="warning"
    )
    server, task, port = await http_server.start(config)
    realtime.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    loops = [asyncio.create_task(realtime.listen()), asyncio.create_task(realtime.flush_loop())]
    try:
        yield realtime
    finally:
        for t in loops:
            t.cancel()
        await http_server.stop(server, task)


def batch(i: int, pad: int = 0) -> bytes:
    candle = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "time": 1_700_000_040_000,
        "close": f"{100 + i}.00000000",
        "source": "live",
        "updated_ms": time.time_ns() // 1_000_000,
        "pad": "x" * pad,  # passed through: a big update fills a stalled client's buffers
        "previous": None,
    }
    return msgspec.json.encode({"time": i, "prices": [], "candles": [candle]})


def queues(realtime: Realtime) -> list[ClientQueue]:
    return [s.queue for s in list(realtime.sio.eio.sockets.values())]


async def connected(realtime: Realtime) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(realtime.url, transports=["websocket"])  # type: ignore[attr-defined]
    assert (await client.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"}))["ok"]
    return client


async def test_room_updates_are_written_straight_to_websocket_clients_in_publish_order(
    redis: aioredis.Redis,
) -> None:
    async with realtime_server(redis) as realtime:
        closes: list[list[float]] = [[] for _ in range(20)]
        clients = [await connected(realtime) for _ in closes]
        finished: list[int] = []
        last = asyncio.Event()
        for n, client in enumerate(clients):

            def record(data: dict[str, Any], n: int = n) -> None:
                closes[n].append(float(data["candle"]["close"]))
                if closes[n][-1] == 299.0:
                    finished.append(n)
                    if len(finished) == len(clients):
                        last.set()

            client.on("live_candle", record)
        for i in range(200):
            await redis.publish("live_updates", batch(i))
            await asyncio.sleep(0.003)  # pacing of the publisher, as the live writer's
        async with asyncio.timeout(10):
            await last.wait()
        for seen in closes:
            # coalescing may skip a state, never send an older one after a newer one
            assert seen == sorted(set(seen)), seen
            assert seen[-1] == 299.0
        written = sum(q.written_through for q in queues(realtime))
        delivered = sum(len(s) for s in closes)
        assert written >= 0.9 * delivered, (written, delivered)
        for client in clients:
            await client.disconnect()


async def stalled_websocket_client(url: str) -> socket.socket:
    """A client with a tiny receive buffer that subscribes, then never reads again."""
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, int(port)))
    received = bytearray()

    async def exactly(n: int) -> bytes:
        while len(received) < n:
            received.extend(await loop.sock_recv(sock, 65536))
        data = bytes(received[:n])
        del received[:n]
        return data

    async def message() -> bytes:
        head = await exactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await exactly(2), "big")
        return await exactly(n)

    async def send(text: str) -> None:  # a masked client text frame (a zero mask)
        await loop.sock_sendall(sock, bytes((0x81, 0x80 | len(text))) + bytes(4) + text.encode())

    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n\r\n".encode(),
    )
    while b"\r\n\r\n" not in received:
        received.extend(await loop.sock_recv(sock, 65536))
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert b" 101 " in head, head
    received[:] = rest
    assert (await message()).startswith(b"0{")  # engine.io open
    await send("40")
    assert (await message()).startswith(b"40")
    await send('421["subscribe",{"symbol":"BTCUSDT","interval":"1m"}]')
    assert (await message()).startswith(b"431")
    return sock  # open, and never read again


async def test_a_websocket_client_that_stops_reading_is_cut_off_and_the_others_keep_up(
    redis: aioredis.Redis,
) -> None:
    async with realtime_server(redis, stall_s=1.0) as realtime:
        normal = await connected(realtime)
        latencies: list[int] = []
        normal.on(
            "live_candle",
            lambda d: latencies.append(time.time_ns() // 1_000_000 - d["candle"]["updated_ms"]),
        )
        stalled = await stalled_websocket_client(realtime.url)  # type: ignore[attr-defined]
        longest = 0
        started = time.monotonic()
        i = 0
        async with asyncio.timeout(30):
            while realtime.slow_clients_dropped == 0:
                await redis.publish("live_updates", batch(i, pad=8000))
                longest = max(longest, realtime.queues.longest())
                i += 1
                await asyncio.sleep(0.01)  # 100 updates/s of 8 kB: 800 kB/s
        cut_after_s = time.monotonic() - started
        seen = len(latencies)
        for j in range(i, i + 20):  # the normal client still receives, promptly
            await redis.publish("live_updates", batch(j))
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            while len(latencies) < seen + 10:  # noqa: ASYNC110 - the handler sets nothing
                await asyncio.sleep(0.01)
        assert realtime.slow_clients_dropped == 1
        assert longest <= 3, longest  # newest state coalesced while it was stalled
        assert sorted(latencies)[int(len(latencies) * 0.99)] < 250, sorted(latencies)[-5:]
        assert cut_after_s < 20, cut_after_s
        assert realtime.clients == 1
        stalled.close()
        await normal.disconnect()
