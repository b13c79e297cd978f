"""The web app's limits (issue 14) over real HTTP and websockets against a real
redis-server: what a hostile client can make it hold, echo or wait for is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
import socketio
import uvicorn
import websockets
from websockets.asyncio.client import connect as ws_connect

from livecandle.config import Settings, parse_intervals
from livecandle.domain.model import SeriesKey
from livecandle.runtime import http_server
from livecandle.runtime.serve import store_for
from livecandle.runtime.service import Service
from livecandle.web.app import build_app
from livecandle.web.candles import ENTRY_OVERHEAD
from livecandle.web.live_body import MAX_BODY
from tests.builders import kline_member
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service

MIN = 60_000
T0 = 1_700_000_040_000  # a minute boundary
TOKEN = "s3cret-token"
GOOD: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "interval": "1m",
    "time": T0 + 20 * MIN,
    "open": "100.5",
    "high": "101",
    "low": "100",
    "close": "100.75",
}
Q = {"symbol": "BTCUSDT", "interval": "1m"}


@pytest.fixture
async def web_url(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[str]:
    async with running_service(
        redis_url,
        emulator,
        "1m",
        roles=("web",),
        port=0,
        write_token=TOKEN,
        cors_origins=("http://allowed.example",),
        header_timeout_s=0.5,
    ) as svc:
        assert svc.web_url is not None
        yield svc.web_url


@pytest.fixture
async def web(web_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web_url, timeout=10) as client:
        yield client


async def save(web: httpx.AsyncClient, body: object, token: str = TOKEN) -> httpx.Response:
    return await web.post(
        "/save-live-candle",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


async def tcp(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    u = urlsplit(url)
    assert u.hostname is not None and u.port is not None
    return await asyncio.open_connection(u.hostname, u.port)


# -- 1. the read cache ------------------------------------------------------------------


async def test_distinct_future_starts_cannot_grow_the_read_cache(
    redis: aioredis.Redis,
) -> None:
    settings = Settings(
        symbols=("BTCUSDT",), intervals=parse_intervals("1m"), read_cache_entries=50
    )
    service = Service(settings, store_for(redis, settings), {"web"})
    asgi, api, _ = build_app(service, service.store, settings)
    config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server, task, port = await http_server.start(config)
    future = 4_000_000_000_000 // MIN * MIN  # aligned, years ahead: every answer is empty
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for batch in range(10):
                replies = await asyncio.gather(
                    *(
                        c.get("/api/klines", params={**Q, "start": future + (batch * 40 + i) * MIN})
                        for i in range(20)
                    ),
                    *(
                        c.get(
                            "/api/v3/klines",
                            params={**Q, "startTime": future + (batch * 40 + 20 + i) * MIN},
                        )
                        for i in range(20)
                    ),
                )
                assert all(r.status_code == 200 for r in replies)
        assert len(api.cache) <= 50  # 400 distinct queries were answered
        assert api.cache.size <= 50 * ENTRY_OVERHEAD
        assert api.cache.size > 0  # empty answers cost something
    finally:
        await http_server.stop(server, task)


async def test_an_entry_evicted_while_redis_answers_is_read_again(
    redis: aioredis.Redis,
) -> None:
    settings = Settings(symbols=("BTCUSDT",), intervals=parse_intervals("1m"), read_cache_entries=1)
    service = Service(settings, store_for(redis, settings), {"web"})
    _, api, _ = build_app(service, service.store, settings)
    await service.store.write_candles(
        SeriesKey.of("BTCUSDT", "1m"),
        [(T0 + i * MIN, kline_member(T0 + i * MIN)) for i in range(3)],
        1,
    )
    a = api.served.chart({**Q, "start": str(T0)})
    b = api.served.chart({**Q, "start": str(T0 + MIN)})
    want_a, want_b = await api.klines_body(a), await api.klines_body(b)
    for _ in range(20):  # b, read first, evicts a while a's "still current" is on its way
        got_b, got_a = await asyncio.gather(api.klines_body(b), api.klines_body(a))
        assert (got_a, got_b) == (want_a, want_b)
    assert api.cache.misses > 22, api.cache.misses  # a was read again at least once


# -- 4. websocket frames ----------------------------------------------------------------


async def test_a_websocket_frame_over_the_cap_closes_that_connection_only(
    web_url: str,
) -> None:
    ws_url = web_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(ws_url, max_size=None) as ws:
        opened = await ws.recv()
        assert str(opened).startswith("0{")
        await ws.send("42" + json.dumps(["subscribe", {"symbol": "x" * 100_000}]))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    other = socketio.AsyncClient(reconnection=False)
    await other.connect(web_url, transports=["websocket"])
    try:
        ack = await other.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        assert ack == {"ok": True, "room": "BTCUSDT:1m"}
    finally:
        await other.disconnect()


async def test_engineio_tells_clients_the_same_cap(web: httpx.AsyncClient) -> None:
    r = await web.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert r.status_code == 200, r.text
    assert json.loads(r.text[1:])["maxPayload"] == 64 * 1024  # long-polling is held to it


# -- 9. POST /save-live-candle -----------------------------------------------------------


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(web_url: str) -> None:
    reader, writer = await tcp(web_url)
    try:
        writer.write(
            b"POST /save-live-candle HTTP/1.1\r\nHost: test\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * (MAX_BODY + 1)
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))  # and never the last chunk
        await writer.drain()
        async with asyncio.timeout(5):
            status = await reader.readline()
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
        assert status.startswith(b"HTTP/1.1 413"), status
        assert b"connection: close" in head
    finally:
        writer.close()


async def test_a_non_ascii_token_is_compared_as_bytes(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    token = "tökén-ß"
    async with (
        running_service(redis_url, emulator, "1m", roles=("web",), port=0, write_token=token) as s,
        httpx.AsyncClient(base_url=str(s.web_url)) as client,
    ):

        async def post(auth: bytes) -> int:
            r = await client.post(
                "/save-live-candle", content=json.dumps(GOOD), headers={b"Authorization": auth}
            )
            return r.status_code

        assert await post(b"Bearer " + token.encode()) == 200
        assert await post(b"Bearer " + token.encode()[:-1]) == 401
        assert await post(b"Bearer \xff\xfe") == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"high": "9" * 3900}, "high"),
        ({"high": "1" + "0" * 20}, "high"),  # 21 integer digits
        ({"volume": "1" + "0" * 20 + ".5"}, "volume"),
        ({"quote_volume": "9" * 21}, "quote_volume"),
        ({"trades": 10**30}, "trades"),
        ({"trades": 2**63}, "trades"),
        ({"x" * 3000: 1}, "x" * 3000),
    ],
)
async def test_numbers_past_what_clients_parse_are_a_short_400(
    web: httpx.AsyncClient, redis: aioredis.Redis, change: dict[str, Any], field: str
) -> None:
    r = await save(web, {**GOOD, **change})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field
    assert len(r.content) < 400 + len(field), r.text  # the value is shown shortened
    assert await redis.get("live_candle:BTCUSDT:1m") is None


async def test_the_largest_amounts_and_trade_count_are_accepted(
    web: httpx.AsyncClient,
) -> None:
    big = "9" * 20 + ".99999999"
    r = await save(
        web,
        {**GOOD, "high": big, "volume": big, "quote_volume": big, "trades": 2**63 - 1},
    )
    assert r.status_code == 200, r.text
    assert r.json()["candle"]["high"] == big and r.json()["candle"]["trades"] == 2**63 - 1


# -- 10. origins, HEAD, slow headers, echoed values --------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://evil.example", False),
        ("http://allowed.example", True),  # LIVECANDLE_CORS_ORIGINS
        ("null", False),
        (None, True),  # not a browser
    ],
)
async def test_socketio_accepts_its_own_origin_and_the_configured_ones(
    web: httpx.AsyncClient, origin: str | None, allowed: bool
) -> None:
    headers = {} if origin is None else {"Origin": origin}
    r = await web.get("/socket.io/", params={"EIO": "4", "transport": "polling"}, headers=headers)
    assert (r.status_code == 200) is allowed, r.text
    if origin is not None and allowed:
        assert r.headers["access-control-allow-origin"] == origin
    if not allowed:
        assert "access-control-allow-origin" not in r.headers


async def test_socketio_accepts_the_page_own_origin_over_both_transports(web_url: str) -> None:
    async with httpx.AsyncClient(base_url=web_url) as c:
        r = await c.get(
            "/socket.io/", params={"EIO": "4", "transport": "polling"}, headers={"Origin": web_url}
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == web_url
    ws_url = web_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(ws_url, origin=web_url) as ws:  # type: ignore[arg-type]
        assert str(await ws.recv()).startswith("0{")
    with pytest.raises(websockets.InvalidStatus):
        async with ws_connect(ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass


async def test_head_answers_like_get_without_a_body(web: httpx.AsyncClient) -> None:
    for path, params in [
        ("/", {}),
        ("/api/klines", Q),  # the fast path
        ("/api/klines", {**Q, "limit": "0"}),  # its 400
        ("/api/v3/klines", Q),  # the fast path, Binance's
        ("/api/symbols", {}),
        ("/api/metadata", Q),
        ("/live-candle", Q),
        ("/api/v3/ping", {}),
        ("/static/main.js", {}),
        ("/openapi.json", {}),
        ("/no-such-page", {}),
    ]:
        got = await web.get(path, params=params)
        head = await web.head(path, params=params)
        assert head.status_code == got.status_code, (path, head.status_code)
        assert head.content == b""
        assert head.headers.get("content-length") == str(len(got.content)), path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path


async def test_connections_that_never_finish_their_headers_are_closed(web_url: str) -> None:
    silent = await tcp(web_url)
    trickle = await tcp(web_url)
    trickle[1].write(b"GET /api/symbols HTTP/1.1\r\nHost: test\r\n")
    try:

        async def keep_trickling() -> None:
            while not trickle[1].is_closing():
                trickle[1].write(b"X-A: b\r\n")  # activity, but never the end of the headers
                await asyncio.sleep(0.1)

        trickler = asyncio.create_task(keep_trickling())
        async with asyncio.timeout(5):  # header_timeout_s is 0.5 here
            assert await silent[0].read() == b""
            assert await trickle[0].read() == b""
        trickler.cancel()
    finally:
        silent[1].close()
        trickle[1].close()
    async with httpx.AsyncClient(base_url=web_url) as c:  # others are served meanwhile
        assert (await c.get("/api/symbols")).status_code == 200


async def test_open_websockets_and_kept_alive_connections_are_not_cut(
    web_url: str,
) -> None:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(web_url, transports=["websocket"])
    try:
        await asyncio.sleep(1.0)  # twice the header deadline: only time passing matters
        ack = await client.call("subscribe", {"symbol": "BTCUSDT", "interval": "1m"})
        assert ack == {"ok": True, "room": "BTCUSDT:1m"}
    finally:
        await client.disconnect()
    reader, writer = await tcp(web_url)
    try:  # a kept-alive connection gets its next request's headers in time
        for _ in range(2):
            writer.write(b"GET /api/symbols HTTP/1.1\r\nHost: test\r\n\r\n")
            async with asyncio.timeout(5):
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/klines", {"symbol": "B" * 30_000, "interval": "1m"}),  # the fast path
        ("/api/klines", {"symbol": "B" * 30_000, "interval": "1m", "x": "1"}),
        ("/api/klines", {"symbol": "BTCUSDT", "interval": "1m", "start": "9" * 30_000}),
        ("/live-candle", {"symbol": "BTCUSDT", "interval": "m" * 30_000}),
        ("/api/metadata", {"symbol": "\u00e9" * 5_000, "interval": "1m"}),
    ],
)
async def test_an_error_shows_a_bad_value_shortened(
    web: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    r = await web.get(path, params=params)
    assert r.status_code == 400
    assert len(r.content) < 1000, len(r.content)
    value = r.json()["value"]
    assert isinstance(value, str) and value.endswith(" bytes)") and "…(" in value


async def test_a_socketio_error_shows_a_bad_value_shortened(web_url: str) -> None:
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("error", errors.append)
    await client.connect(web_url, transports=["websocket"])
    try:
        ack = await client.call("subscribe", {"symbol": "y" * 60_000, "interval": "1m"})
        assert ack["ok"] is False and len(ack["error"]) < 300, len(ack["error"])
        assert "…(60002 bytes)" in ack["error"]
    finally:
        await client.disconnect()
