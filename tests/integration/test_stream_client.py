"""BinanceStream and the emulator's websocket protocol, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import msgspec
import websockets

from livecandle.exchange.binance.stream import BinanceStream
from livecandle.exchange.binance.stream_limits import control_messages, url_streams
from tests.helpers import EmulatorProcess


@contextlib.asynccontextmanager
async def streaming(stream: BinanceStream) -> AsyncIterator[BinanceStream]:
    task = asyncio.create_task(stream.run())
    try:
        async with asyncio.timeout(15):
            await stream.connected.wait()
        yield stream
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def agg_ids(messages: list[str | bytes]) -> list[int]:
    out = []
    for m in messages:
        d = msgspec.json.decode(m)
        data = d.get("data", d)
        if data.get("e") == "aggTrade":
            out.append(data["a"])
    return out


async def collect(queue: asyncio.Queue[str | bytes], seconds: float) -> list[str | bytes]:
    out: list[str | bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                out.append(await queue.get())
    return out


class ReaderQueue(asyncio.Queue[str | bytes]):
    """A queue that knows which socket's reader put each message: every socket has a
    reader task of its own. At each new reader's first message it notes whether the
    reader before it was still reading (a hand-over with overlap) or already gone."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: list[asyncio.Task[object] | None] = []
        self.previous_alive: list[bool] = []

    def put_nowait(self, item: str | bytes) -> None:
        task = asyncio.current_task()
        if task not in self.readers:
            if self.readers:
                last = self.readers[-1]
                self.previous_alive.append(last is not None and not last.done())
            self.readers.append(task)
        super().put_nowait(item)


async def test_rotation_before_the_cut_loses_no_message(emulator: EmulatorProcess) -> None:
    emulator.control(max_connection_age_s=6.0)
    try:
        queue = ReaderQueue()
        stream = BinanceStream(emulator.ws_url, ["btcusdt@aggTrade"], queue, rotate_after_s=2.0)
        async with streaming(stream):
            messages = await collect(queue, 9.0)
        ids = sorted(set(agg_ids(messages)))
        assert stream.groups[0].stats.rotations >= 3
        # three sockets or more replaced the one before, and each delivered its first
        # message while the socket it replaced was still reading: an overlap, not a cut
        assert len(queue.previous_alive) >= 3
        assert all(queue.previous_alive)
        assert ids == list(range(ids[0], ids[-1] + 1))  # contiguous: nothing fell between
        # (duplicates from the overlap are likely but not certain: the old reader may be
        # cancelled before it reads the message the new one delivered first)
        assert stream.reconnects == 0  # never cut by the server
    finally:
        emulator.control(max_connection_age_s=86_400.0)


async def test_an_early_cut_reconnects(emulator: EmulatorProcess) -> None:
    emulator.control(max_connection_age_s=1.5)
    try:
        queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        stream = BinanceStream(emulator.ws_url, ["ethusdt@aggTrade"], queue)
        async with streaming(stream):
            await collect(queue, 5.0)
        assert stream.reconnects >= 2
    finally:
        emulator.control(max_connection_age_s=86_400.0)


async def test_a_silent_stream_is_replaced_by_the_watchdog(emulator: EmulatorProcess) -> None:
    queue: asyncio.Queue[str | bytes] = asyncio.Queue()
    stream = BinanceStream(emulator.ws_url, ["btcusdt@aggTrade"], queue, silence_s=1.0)
    async with streaming(stream):
        await collect(queue, 1.0)
        emulator.control(stall={"symbol": "BTCUSDT", "seconds": 3})
        await collect(queue, 4.0)
    assert stream.groups[0].stats.silences >= 1
    assert stream.reconnects >= 1


async def test_more_than_1024_streams_use_several_connections(
    emulator: EmulatorProcess,
) -> None:
    names = ["btcusdt@aggTrade"] + [f"x{i}usdt@aggTrade" for i in range(1500)]
    queue: asyncio.Queue[str | bytes] = asyncio.Queue()
    stream = BinanceStream(emulator.ws_url, names, queue)
    async with streaming(stream):
        messages = await collect(queue, 3.0)
        assert len(stream.groups) == 2
        assert [g.stats.streams for g in stream.groups] == [1024, 477]
        assert all(g.stats.state.value == "open" for g in stream.groups)
        assert emulator.state()["streams"]["connections"] >= 2
    replies = [m for m in messages if b'"result"' in (m if isinstance(m, bytes) else m.encode())]
    # streams beyond a short URL are SUBSCRIBEd in messages of at most 3,500 bytes
    base = emulator.ws_url + "/stream"
    in_urls = [url_streams(base, g.streams) for g in stream.groups]
    assert all(
        len(base) + 9 + sum(len(s) + 1 for s in g.streams[:n]) <= 2001
        for g, n in zip(stream.groups, in_urls, strict=True)
    )
    expected = [
        control_messages("SUBSCRIBE", g.streams[n:], itertools.count())
        for g, n in zip(stream.groups, in_urls, strict=True)
    ]
    assert all(len(m) <= 3_500 for ms in expected for m in ms)
    assert len(replies) == sum(len(ms) for ms in expected) > 2
    assert agg_ids(messages)


async def test_subscribe_at_run_time(emulator: EmulatorProcess) -> None:
    queue: asyncio.Queue[str | bytes] = asyncio.Queue()
    stream = BinanceStream(emulator.ws_url, ["btcusdt@aggTrade"], queue)
    async with streaming(stream):
        await collect(queue, 0.5)
        stream.subscribe(["ethusdt@aggTrade"])
        messages = await collect(queue, 2.0)
    symbols = {msgspec.json.decode(m).get("data", {}).get("s") for m in messages}
    assert "ETHUSDT" in symbols


async def test_emulator_speaks_binance_control_messages(emulator: EmulatorProcess) -> None:
    async with websockets.connect(emulator.ws_url + "/ws/btcusdt@aggTrade") as ws:
        raw = msgspec.json.decode(await ws.recv())
        assert raw["e"] == "aggTrade" and raw["s"] == "BTCUSDT"  # raw payload on /ws
        await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@kline_1s"],"id":1}')
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        await ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":2}')
        await ws.send('{"method":"SET_PROPERTY","params":["combined","x"],"id":5}')
        replies = {}
        async with asyncio.timeout(5):
            while len(replies) < 4:
                m = msgspec.json.decode(await ws.recv())
                if "id" in m:
                    replies[m["id"]] = m
        assert replies[1] == {"result": None, "id": 1}
        assert replies[3] == {"result": ["btcusdt@aggTrade", "ethusdt@kline_1s"], "id": 3}
        assert replies[2] == {"result": False, "id": 2}
        assert replies[5]["code"] == 1


async def test_more_than_five_messages_a_second_closes_the_connection(
    emulator: EmulatorProcess,
) -> None:
    async with websockets.connect(emulator.ws_url + "/ws/btcusdt@aggTrade") as ws:
        for i in range(7):
            await ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
        async with asyncio.timeout(5):
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass
        assert ws.close_code is not None


async def test_final_kline_payload_equals_the_rest_kline(emulator: EmulatorProcess) -> None:
    import httpx

    async with websockets.connect(emulator.ws_url + "/stream?streams=btcusdt@kline_1s") as ws:
        async with asyncio.timeout(10):
            while True:
                m = msgspec.json.decode(await ws.recv())
                k = m["data"]["k"]
                if k["x"]:
                    break
    async with httpx.AsyncClient() as client:
        rows = (
            await client.get(
                emulator.rest_url + "/api/v3/klines",
                params={"symbol": "BTCUSDT", "interval": "1s", "startTime": k["t"], "limit": 1},
            )
        ).json()
    assert rows[0] == [
        k["t"],
        k["o"],
        k["h"],
        k["l"],
        k["c"],
        k["v"],
        k["T"],
        k["q"],
        k["n"],
        k["V"],
        k["Q"],
        "0",
    ]
