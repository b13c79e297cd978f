"""Binance's websocket streams through livecandle's web role (issue 11, item 5).

Real parts: the emulator process upstream, livecandle's web app (``build_app``) or the
stream proxy alone under uvicorn, real websocket clients (``websockets``, python-binance's
``BinanceSocketManager`` with only its stream URL changed). What must hold: kline,
aggTrade and mini-ticker events through ``/ws/<s>``, ``/stream?streams=`` and SUBSCRIBE
on ``/ws``, byte for byte the upstream's; one upstream subscription per stream whatever
the number of readers; Binance's answers and error frames; garbage, too many streams,
too many messages, too many connections and slow readers met as the limits say, while a
bystander's stream goes on without a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from livecandle.config import Settings, parse_intervals
from livecandle.runtime import http_server
from livecandle.runtime.serve import store_for
from livecandle.runtime.service import Service
from livecandle.web.app import build_app
from livecandle.web.stream_hub import StreamHub
from livecandle.web.stream_proxy import StreamLimits, StreamProxy
from tests.helpers import EmulatorProcess

ATTACKER = "127.0.0.2"


# -- serving --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(asgi: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(
        asgi,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
    server, task, port = await http_server.start(config)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        await http_server.stop(server, task)


def find_proxy(asgi: Any) -> StreamProxy:
    app = asgi
    while not isinstance(app, StreamProxy):
        app = app.app
    return app


async def not_found(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def web(redis: aioredis.Redis, emulator: EmulatorProcess) -> AsyncIterator[tuple[str, Any]]:
    """livecandle's web app (the real wiring) with the emulator upstream."""
    settings = Settings(
        symbols=("BTCUSDT",), intervals=parse_intervals("1m"), binance_ws_url=emulator.ws_url
    )
    service = Service(settings, store_for(redis, settings), {"web"})
    asgi, _, _ = build_app(service, service.store, settings)
    proxy = find_proxy(asgi)
    proxy.hub.linger_s = 0.5
    async with serving(asgi) as url:
        yield url, proxy
    await proxy.hub.aclose()


@pytest.fixture
def limits() -> StreamLimits:
    return StreamLimits()


@pytest.fixture
async def proxy(emulator: EmulatorProcess, limits: StreamLimits) -> AsyncIterator[tuple[str, Any]]:
    """The stream proxy alone (its limits set by the test), the emulator upstream."""
    p = StreamProxy(not_found, StreamHub(emulator.ws_url, linger_s=0.5), limits)
    async with serving(p) as url:
        yield url, p
    await p.hub.aclose()


# -- reading --------------------------------------------------------------------------


def is_reply(frame: str | bytes) -> bool:
    return isinstance(frame, str) and frame.startswith(('{"result"', '{"error"'))


async def collect(ws: ClientConnection, seconds: float) -> list[str]:
    out: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                out.append(str(await ws.recv()))
    return out


async def until(
    ws: ClientConnection, done: Callable[[list[str]], bool], timeout_s: float = 20
) -> list[str]:
    """Frames until ``done`` holds for those received so far."""
    out: list[str] = []
    async with asyncio.timeout(timeout_s):
        while not done(out):
            out.append(str(await ws.recv()))
    return out


async def ask(ws: ClientConnection, request: Any) -> str:
    """Send a request (a dict, or raw text) and return the next reply frame."""
    await ws.send(request if isinstance(request, str) else json.dumps(request))
    frames = await until(ws, lambda got: bool(got) and is_reply(got[-1]), 10)
    await asyncio.sleep(0.25)  # paced: Binance allows 5 messages a second
    return frames[-1]


def event(frame: str) -> dict[str, Any]:
    d = json.loads(frame)
    return d["data"] if isinstance(d, dict) and "stream" in d else d


def kinds(frames: list[str]) -> set[str]:
    out = set()
    for f in frames:
        if is_reply(f):
            continue
        d = event(f)
        out.add("arr" if isinstance(d, list) else d["e"])
    return out


async def emulator_streams(emulator: EmulatorProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as c:
        stats: dict[str, Any] = (await c.get(emulator.rest_url + "/_emulator/stats")).json()
    return stats["streams"]


async def emulator_settles(emulator: EmulatorProcess, connections: int, streams: int) -> None:
    """Wait until the emulator holds exactly so many connections and streams."""
    async with asyncio.timeout(15):
        while True:
            s = await emulator_streams(emulator)
            if (s["connections"], s["streams"]) == (connections, streams):
                return
            await asyncio.sleep(0.1)  # another process's state: nothing to await


async def eventually(done: Callable[[], bool], timeout_s: float = 20) -> None:
    """Wait until ``done()`` holds: the server's handlers' state, with no event to await."""
    async with asyncio.timeout(timeout_s):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


class Bystander:
    """An ordinary reader of ``btcusdt@aggTrade`` through the proxy: every trade, in
    order, whatever other connections do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self.first = asyncio.Event()
        self.grew = asyncio.Event()

    async def __aenter__(self) -> Bystander:
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(20):
            await self.first.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        seen = len(self.ids)
        async with asyncio.timeout(20):  # and it goes on after whatever happened
            while len(self.ids) < seen + 10 and not self._task.done():
                self.grew.clear()
                grew = asyncio.ensure_future(self.grew.wait())
                await asyncio.wait({grew, self._task}, return_when=asyncio.FIRST_COMPLETED)
                grew.cancel()
        assert not self._task.done(), self._task  # still connected
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        assert self.ids == list(range(self.ids[0], self.ids[0] + len(self.ids)))  # no gap

    async def _read(self) -> None:
        async with websockets.connect(self.url + "/ws/btcusdt@aggTrade") as ws:
            async for frame in ws:
                self.ids.append(json.loads(frame)["a"])
                self.first.set()
                self.grew.set()


# -- streams ----------------------------------------------------------------------------


async def side_by_side(proxied: str, direct: str, seconds: float) -> tuple[list[str], list[str]]:
    """Frames of the same URL read through the proxy and straight from the emulator."""
    async with websockets.connect(direct, max_queue=None) as d:
        async with websockets.connect(proxied, max_queue=None) as p:
            through = await collect(p, seconds)
        await asyncio.sleep(0.5)  # the direct reader's last frames (they arrive first)
        straight = await collect(d, 0.5)
    return through, straight


def assert_exact_copy(through: list[str], straight: list[str]) -> None:
    """Every proxied frame is an upstream frame, byte for byte, in the upstream's order
    (the proxy joined later, so its frames are a run of the direct reader's)."""
    assert through, "nothing came through the proxy"
    start = straight.index(through[0])
    assert straight[start : start + len(through)] == through


async def test_raw_streams_carry_the_upstream_payloads_byte_for_byte(
    web: tuple[str, Any], emulator: EmulatorProcess
) -> None:
    url, _ = web
    path = "/ws/btcusdt@aggTrade/btcusdt@kline_1m/ethusdt@miniTicker"
    through, straight = await side_by_side(url + path, emulator.ws_url + path, 5.0)
    assert_exact_copy(through, straight)
    assert kinds(through) == {"aggTrade", "kline", "24hrMiniTicker"}
    assert not any(f.startswith('{"stream"') for f in through)  # raw: the payload alone


async def test_combined_streams_carry_the_upstream_frames_byte_for_byte(
    web: tuple[str, Any], emulator: EmulatorProcess
) -> None:
    url, _ = web
    path = "/stream?streams=ethusdt@aggTrade/ethusdt@kline_1m/btcusdt@miniTicker/!miniTicker@arr"
    through, straight = await side_by_side(url + path, emulator.ws_url + path, 5.0)
    assert_exact_copy(through, straight)
    assert kinds(through) == {"aggTrade", "kline", "24hrMiniTicker", "arr"}
    streams = {json.loads(f)["stream"] for f in through}
    assert streams == {
        "ethusdt@aggTrade",
        "ethusdt@kline_1m",
        "btcusdt@miniTicker",
        "!miniTicker@arr",
    }
    arrays = [event(f) for f in through if json.loads(f)["stream"] == "!miniTicker@arr"]
    assert {t["s"] for a in arrays for t in a} == {"BTCUSDT", "ETHUSDT"}


async def test_subscribe_on_ws_answers_as_binance_and_streams_follow(
    web: tuple[str, Any],
) -> None:
    url, _ = web
    async with websockets.connect(url + "/ws") as ws:
        sub = {
            "method": "SUBSCRIBE",
            "params": ["btcusdt@aggTrade", "ethusdt@kline_1m", "btcusdt@miniTicker"],
            "id": 1,
        }
        assert await ask(ws, sub) == '{"result":null,"id":1}'
        got = await until(ws, lambda f: kinds(f) == {"aggTrade", "kline", "24hrMiniTicker"})
        assert not any(f.startswith('{"stream"') for f in got)
        assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == (
            '{"result":["btcusdt@aggTrade","ethusdt@kline_1m","btcusdt@miniTicker"],"id":2}'
        )
        set_combined = {"method": "SET_PROPERTY", "params": ["combined", True], "id": "a3"}
        assert await ask(ws, set_combined) == '{"result":null,"id":"a3"}'
        assert await ask(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 4}) == (
            '{"result":true,"id":4}'
        )
        wrapped = await until(ws, lambda f: len([x for x in f if not is_reply(x)]) >= 3)
        assert all(json.loads(f)["stream"] for f in wrapped if not is_reply(f))
        unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 5}
        assert await ask(ws, unsub) == '{"result":null,"id":5}'
        after = await collect(ws, 3.0)  # frames queued after the answer
        assert "btcusdt@aggTrade" not in {json.loads(f)["stream"] for f in after}
        assert {json.loads(f)["stream"] for f in after} >= {"btcusdt@miniTicker"}


async def test_many_readers_of_a_stream_make_one_upstream_subscription(
    web: tuple[str, Any], emulator: EmulatorProcess
) -> None:
    url, proxy = web
    await emulator_settles(emulator, 0, 0)  # no earlier test's upstream left
    stream = "btcusdt@kline_1m"
    async with (
        websockets.connect(f"{url}/ws/{stream}") as a,
        websockets.connect(f"{url}/ws/{stream}") as b,
        websockets.connect(f"{url}/stream?streams={stream}") as c,
        websockets.connect(f"{url}/ws") as d,
    ):
        r = await ask(d, {"method": "SUBSCRIBE", "params": [stream], "id": 1})
        assert r == '{"result":null,"id":1}'
        firsts = await asyncio.gather(*(until(ws, lambda f: bool(f)) for ws in (a, b, c)))
        await emulator_settles(emulator, 1, 1)  # one connection upstream, one stream
        hub = proxy.hub.stats()
        assert (hub["upstream_streams"], hub["subscribes"], hub["consumers"]) == (1, 1, 4)
        # the same event, the same bytes: raw readers the payload, combined the frame
        frame_a = firsts[0][0]
        later_b = await until(
            b, lambda f: bool(f) and json.loads(f[-1])["E"] >= json.loads(frame_a)["E"]
        )
        assert frame_a in [*firsts[1], *later_b]
    await emulator_settles(emulator, 0, 0)  # the last reader gone: unsubscribed upstream
    assert proxy.hub.stats()["unsubscribes"] == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-binance's websockets import
async def test_python_binance_socket_manager_reads_through_the_proxy(
    web: tuple[str, Any],
) -> None:
    from binance import AsyncClient, BinanceSocketManager

    url, _ = web
    client = AsyncClient()  # no request: only its sockets are used
    try:
        bsm = BinanceSocketManager(client)
        bsm.STREAM_URL = url + "/"  # the only change
        async with bsm.kline_socket("BTCUSDT", AsyncClient.KLINE_INTERVAL_1MINUTE) as s:
            msg = await asyncio.wait_for(s.recv(), 20)
            assert (msg["e"], msg["s"], msg["k"]["i"]) == ("kline", "BTCUSDT", "1m")
        async with bsm.aggtrade_socket("ETHUSDT") as s:
            msg = await asyncio.wait_for(s.recv(), 20)
            assert (msg["e"], msg["s"]) == ("aggTrade", "ETHUSDT")
        async with bsm.symbol_miniticker_socket("BTCUSDT") as s:
            msg = await asyncio.wait_for(s.recv(), 20)
            assert (msg["e"], msg["s"]) == ("24hrMiniTicker", "BTCUSDT")
        async with bsm.miniticker_socket() as s:  # !miniTicker@arr@1000ms
            msg = await asyncio.wait_for(s.recv(), 20)
            assert {t["e"] for t in msg} == {"24hrMiniTicker"}
        streams = ["btcusdt@aggTrade", "ethusdt@kline_1m"]
        async with bsm.multiplex_socket(streams) as s:
            seen: set[str] = set()
            async with asyncio.timeout(20):
                while seen != set(streams):
                    msg = await s.recv()
                    seen.add(msg["stream"])
                    assert msg["data"]["e"] in ("aggTrade", "kline")
    finally:
        await client.close_connection()


# -- hostile clients ----------------------------------------------------------------------


async def test_garbage_gets_binance_error_frames_and_the_connection_stays(
    proxy: tuple[str, StreamProxy],
) -> None:
    url, p = proxy
    async with Bystander(url), websockets.connect(url + "/ws") as ws:
        answers = [
            await ask(ws, "{not json"),
            await ask(ws, "[1,2]"),
            await ask(ws, {"params": ["btcusdt@aggTrade"], "id": 1}),
            await ask(ws, {"method": "PUBLISH", "params": [], "id": 2}),
            await ask(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 3}),
            await ask(ws, {"method": "SUBSCRIBE", "params": ["BTCUSDT@aggTrade"], "id": 4}),
            await ask(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1.5}),
            await ask(ws, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 6}),
            await ask(ws, {"method": "GET_PROPERTY", "params": ["colour"], "id": 7}),
            await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8}),
        ]
        assert answers == [
            '{"error":{"code":3,"msg":"Invalid JSON: expected value at line 1 column 2"}}',
            '{"error":{"code":2,"msg":"Invalid request: expected a JSON object"}}',
            '{"error":{"code":2,"msg":"Invalid request: missing field `method`"},"id":1}',
            '{"error":{"code":2,"msg":"Invalid request: unknown variant `PUBLISH`, expected one'
            " of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, "
            '`GET_PROPERTY`"},"id":2}',
            '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":3}',
            '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":4}',
            '{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}}',
            '{"error":{"code":1,"msg":"Invalid value type: expected Boolean"},"id":6}',
            '{"error":{"code":0,"msg":"Unknown property"},"id":7}',
            '{"result":[],"id":8}',  # nothing invalid was subscribed; still connected
        ]
    assert p.violations["bad_requests"] == 9
    assert p.hub.stats()["upstream_streams"] <= 1  # only the bystander's


async def test_an_oversized_message_is_ignored_unanswered(proxy: tuple[str, StreamProxy]) -> None:
    url, p = proxy
    async with websockets.connect(url + "/ws") as ws:
        names = [f"s{i}@aggTrade" for i in range(400)]  # about 6 KB
        big = json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1})
        assert len(big) > 4096
        await ws.send(big)
        assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == '{"result":[],"id":2}'
    assert p.violations["oversized_ignored"] == 1


async def test_more_than_1024_streams_on_a_connection_are_refused(
    proxy: tuple[str, StreamProxy], emulator: EmulatorProcess
) -> None:
    url, p = proxy
    async with Bystander(url), websockets.connect(url + "/ws") as ws:
        answers = []
        for k in range(5):  # 5 x 205 names: each message under 4 KB, 1025 in all
            names = [f"a{i}@aggTrade" for i in range(k * 205, (k + 1) * 205)]
            answers.append(await ask(ws, {"method": "SUBSCRIBE", "params": names, "id": k}))
        assert answers[:4] == [f'{{"result":null,"id":{k}}}' for k in range(4)]
        assert answers[4] == '{"error":{"code":2,"msg":"Invalid request: too many streams"},"id":4}'
        listed = json.loads(await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 9}))
        assert len(listed["result"]) == 820
    assert p.violations["too_many_streams"] == 1


@pytest.mark.parametrize("limits", [StreamLimits(max_streams=3)])
async def test_a_url_naming_more_streams_than_allowed_is_refused(
    proxy: tuple[str, StreamProxy],
) -> None:
    # (1025 names do not fit in the 8 KB request line a server reads: a lower limit here)
    url, p = proxy
    async with websockets.connect(f"{url}/ws/a@trade/b@trade/c@trade"):
        pass
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{url}/stream?streams=a@trade/b@trade/c@trade/d@trade"):
            pass
    assert refused.value.response.status_code == 400
    assert p.violations["too_many_streams"] == 1


async def test_times_in_microseconds_are_refused_not_sent_in_milliseconds(
    proxy: tuple[str, StreamProxy],
) -> None:
    url, p = proxy
    async with websockets.connect(url + "/ws/btcusdt@aggTrade?timeUnit=millisecond") as ws:
        assert json.loads(await ws.recv())["e"] == "aggTrade"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            url + "/stream?streams=btcusdt@aggTrade&timeUnit=MICROSECOND"
        ):
            pass
    assert refused.value.response.status_code == 400
    assert b"milliseconds only" in refused.value.response.body
    assert p.violations["time_unit_refused"] == 1


async def test_more_than_5_messages_a_second_close_the_connection(
    proxy: tuple[str, StreamProxy],
) -> None:
    url, p = proxy
    async with Bystander(url), websockets.connect(url + "/ws") as ws:
        for i in range(10):  # at once
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        replies = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    replies.append(await ws.recv())
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert replies == [f'{{"result":[],"id":{i}}}' for i in range(5)]  # then closed
    assert p.violations["rate_disconnects"] == 1


async def test_names_in_the_url_that_are_no_stream_are_ignored(
    proxy: tuple[str, StreamProxy],
) -> None:
    url, _ = proxy
    async with websockets.connect(url + "/ws/0") as ws:  # as ccxt.pro connects
        assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == '{"result":[],"id":1}'
        # a valid name whatever the upstream makes of it (this emulator has no @trade
        # stream): the other names of the same upstream SUBSCRIBE still flow
        streams = ["btcusdt@trade", "btcusdt@aggTrade"]
        r = await ask(ws, {"method": "SUBSCRIBE", "params": streams, "id": 2})
        assert r == '{"result":null,"id":2}'
        got = await until(ws, lambda f: bool(f) and not is_reply(f[-1]))
        assert json.loads(got[-1])["e"] in ("aggTrade", "trade")


@pytest.mark.parametrize("limits", [StreamLimits(connections_per_ip=2, max_connections=3)])
async def test_connections_per_address_and_in_all_are_capped(
    proxy: tuple[str, StreamProxy],
) -> None:
    url, p = proxy
    path = url + "/ws/btcusdt@aggTrade"
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            await stack.enter_async_context(websockets.connect(path))
        with pytest.raises(websockets.InvalidStatus) as refused:
            await stack.enter_async_context(websockets.connect(path))
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["code"] == -1003
        other = await stack.enter_async_context(
            websockets.connect(path, local_addr=(ATTACKER, 0))
        )  # another address: its own share, up to the total
        with pytest.raises(websockets.InvalidStatus) as full:
            await stack.enter_async_context(websockets.connect(path, local_addr=("127.0.0.3", 0)))
        assert full.value.response.status_code == 429
        assert json.loads(await other.recv())["e"] == "aggTrade"  # the admitted are served
    assert p.violations["connections_refused"] == 2
    await eventually(lambda: not p.connections)  # their handlers end as the sockets close
    async with websockets.connect(path):  # the count went down with them
        pass


@pytest.mark.parametrize(
    "limits",
    [StreamLimits(max_incoming_per_s=10_000, max_message_bytes=1 << 16, queue_bytes=256 << 10)],
)
async def test_a_reader_that_does_not_read_is_dropped_not_buffered(
    proxy: tuple[str, StreamProxy],
) -> None:
    url, p = proxy
    async with Bystander(url):
        # a client that stops reading: its library takes one message, the kernel little
        slow = await websockets.connect(url + "/ws", max_queue=1)
        names = [f"b{i}@aggTrade" for i in range(1000)]
        await slow.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 0}))
        for i in range(400):  # each answer lists 1000 names: about 6 MB asked for
            await slow.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i + 1}))
        await eventually(lambda: p.violations["slow_dropped"] > 0)
        assert max((len(c.queue) for c in p.connections), default=0) < 1000
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await slow.recv()
        await slow.close()
    assert p.violations["slow_dropped"] == 1


# -- the emulator's mini tickers ----------------------------------------------------------


def tickers_after_a_trade(frames: list[str]) -> int:
    traded = [i for i, f in enumerate(frames) if '"aggTrade"' in f]
    return sum('"24hrMiniTicker"' in f for f in frames[traded[0] :]) if traded else 0


async def test_emulator_mini_tickers_are_its_trades_over_24_hours(
    emulator: EmulatorProcess,
) -> None:
    path = "/stream?streams=btcusdt@aggTrade/btcusdt@miniTicker"
    async with websockets.connect(emulator.ws_url + path, max_queue=None) as ws:
        frames = await until(ws, lambda f: tickers_after_a_trade(f) >= 3)
    last_price = None
    tickers = []
    for f in map(json.loads, frames):
        if f["stream"] == "btcusdt@aggTrade":
            last_price = f["data"]["p"]
        elif last_price is not None:
            assert f["data"]["c"] == last_price  # the close is the last trade sent before
            tickers.append(f["data"])
    assert len(tickers) >= 2
    times = [t["E"] for t in tickers]
    assert all(900 <= b - a <= 1500 for a, b in itertools.pairwise(times))  # 1 s
    t = tickers[-1]
    start = (t["E"] - 86_400_000) // 60_000 * 60_000  # the window opens on a minute
    async with httpx.AsyncClient(base_url=emulator.rest_url) as c:
        rows = []
        for k in range(2):
            q = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}
            r = await c.get("/api/v3/klines", params={**q, "startTime": start + k * 60_000_000})
            rows += r.json()
    assert rows[0][0] == start and len(rows) >= 1441
    traded = [r for r in rows if r[8] > 0]
    closed = [r for r in traded if r[6] < t["E"] // 60_000 * 60_000]  # whole minutes before E
    assert t["o"] == traded[0][1]
    d = Decimal
    assert max(d(r[2]) for r in closed) <= d(t["h"]) <= max(d(r[2]) for r in traded)
    assert min(d(r[3]) for r in traded) <= d(t["l"]) <= min(d(r[3]) for r in closed)
    assert sum(d(r[5]) for r in closed) <= d(t["v"]) <= sum(d(r[5]) for r in traded)
    assert sum(d(r[7]) for r in closed) <= d(t["q"]) <= sum(d(r[7]) for r in traded)


async def test_ccxt_pro_watches_through_the_proxy(
    web: tuple[str, StreamProxy], emulator: EmulatorProcess
) -> None:
    """ccxt.pro (freqtrade's websocket client) as it connects: ``/ws/<n>``, then SUBSCRIBE;
    its markets from the emulator's REST, its streams from livecandle."""
    import ccxt.pro

    url, p = web
    ex = ccxt.pro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"]["public"] = emulator.rest_url + "/api/v3"
    ex.urls["api"]["ws"]["spot"] = url + "/ws"
    try:
        candles = await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), 20)
        assert candles and len(candles[-1]) == 6
        trades = await asyncio.wait_for(
            ex.watch_trades("ETH/USDT", params={"name": "aggTrade"}), 20
        )
        assert trades[-1]["symbol"] == "ETH/USDT"
        assert all(c.startswith(url + "/ws/") for c in ex.clients)
    finally:
        await ex.close()
    assert p.violations["url_names_ignored"] >= 1  # its /ws/<n>, accepted as Binance does
    assert p.hub.stats()["subscribes"] == 2


async def test_streams_upstream_are_capped_for_every_client_together(
    emulator: EmulatorProcess,
) -> None:
    p = StreamProxy(not_found, StreamHub(emulator.ws_url, linger_s=0.5, max_upstream_streams=3))
    async with serving(p) as url:
        try:
            async with (
                websockets.connect(url + "/ws/btcusdt@aggTrade/ethusdt@aggTrade") as a,
                websockets.connect(url + "/ws", local_addr=(ATTACKER, 0)) as b,
            ):
                made_up = {"method": "SUBSCRIBE", "params": ["zz1@trade", "zz2@trade"], "id": 1}
                assert await ask(b, made_up) == (
                    '{"error":{"code":2,"msg":"Invalid request: too many streams on this'
                    ' server"},"id":1}'
                )
                shared = {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "zz1@trade"]}
                assert await ask(b, {**shared, "id": 2}) == '{"result":null,"id":2}'
                with pytest.raises(websockets.InvalidStatus) as refused:
                    async with websockets.connect(url + "/ws/zz2@trade"):
                        pass
                assert refused.value.response.status_code == 429
                assert json.loads(await a.recv())["e"] == "aggTrade"
                assert p.hub.stats()["upstream_streams"] == 3
            assert p.violations["upstream_full"] == 2
        finally:
            await p.hub.aclose()
