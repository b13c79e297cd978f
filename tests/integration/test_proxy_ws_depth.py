"""Depth streams through the proxy, and the proxy in ``/healthz`` and ``/metrics`` (issue 11).

Real parts: the emulator upstream, livecandle's web role as ``serve`` runs it (the stream
proxy, the order books, the REST proxy), real websocket clients (``websockets`` and
python-binance's ``BinanceSocketManager`` with only its stream URL changed). What must
hold: ``<s>@depth<n>`` partial books, ``<s>@bookTicker`` and ``<s>@depth@100ms`` diffs on
``/ws`` and ``/stream`` are the emulator's own frames, byte for byte; every local consumer
of a set of depth streams together costs one upstream subscription per stream; the
health and metrics endpoints count what the proxy did.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from livecandle.exchange.binance.weights import Priority
from livecandle.runtime.service import Service
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service
from tests.integration.test_proxy_ws import (
    ask,
    assert_exact_copy,
    emulator_settles,
    event,
    is_reply,
    side_by_side,
    until,
)


@pytest.fixture
async def web(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[tuple[Service, str]]:
    """The web role as ``serve`` runs it (no stream role: the proxy's hub alone upstream),
    on a flushed Redis."""
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc:
        assert svc.web_url is not None
        yield svc, svc.web_url


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


def kind(payload: Any) -> str:
    """What a depth-stream payload is, by Binance's shapes."""
    if isinstance(payload, dict) and list(payload) == ["lastUpdateId", "bids", "asks"]:
        return "partial"
    if isinstance(payload, dict) and list(payload) == ["u", "s", "b", "B", "a", "A"]:
        return "bookTicker"
    if isinstance(payload, dict) and payload.get("e") == "depthUpdate":
        return "diff"
    return "other"


async def healthz(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.get("/healthz")
    body: dict[str, Any] = r.json()
    return body


async def metrics(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        text = (await c.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# -- depth streams ----------------------------------------------------------------------


async def test_partial_books_and_book_tickers_on_ws_are_the_upstreams_frames(
    web: tuple[Service, str], emulator: EmulatorProcess
) -> None:
    _, url = web
    path = "/ws/btcusdt@depth5/ethusdt@depth10@100ms/btcusdt@bookTicker"
    through, straight = await side_by_side(ws_url(url) + path, emulator.ws_url + path, 4.0)
    assert_exact_copy(through, straight)
    payloads = [json.loads(f) for f in through]
    assert {kind(p) for p in payloads} == {"partial", "bookTicker"}
    sizes = {len(p["bids"]) for p in payloads if kind(p) == "partial"}
    assert sizes == {5, 10}
    assert {p["s"] for p in payloads if kind(p) == "bookTicker"} == {"BTCUSDT"}


async def test_diffs_and_partial_books_on_stream_are_the_upstreams_frames_without_a_gap(
    web: tuple[Service, str], emulator: EmulatorProcess
) -> None:
    _, url = web
    path = "/stream?streams=ethusdt@depth@100ms/ethusdt@depth5@100ms/ethusdt@bookTicker"
    through, straight = await side_by_side(ws_url(url) + path, emulator.ws_url + path, 4.0)
    assert_exact_copy(through, straight)
    by_stream: dict[str, list[Any]] = {}
    for f in through:
        frame = json.loads(f)
        by_stream.setdefault(frame["stream"], []).append(frame["data"])
    assert set(by_stream) == {"ethusdt@depth@100ms", "ethusdt@depth5@100ms", "ethusdt@bookTicker"}
    diffs = by_stream["ethusdt@depth@100ms"]
    assert len(diffs) >= 5 and {kind(d) for d in diffs} == {"diff"}
    # the diffs a local book needs: each starts where the one before ended
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(diffs))
    assert {kind(d) for d in by_stream["ethusdt@depth5@100ms"]} == {"partial"}


async def test_depth_streams_subscribed_on_ws_follow_binances_protocol(
    web: tuple[Service, str],
) -> None:
    _, url = web
    names = ["btcusdt@depth10@100ms", "btcusdt@bookTicker", "btcusdt@depth@100ms"]
    async with websockets.connect(ws_url(url) + "/ws") as ws:
        r = await ask(ws, {"method": "SUBSCRIBE", "params": names, "id": 1})
        assert r == '{"result":null,"id":1}'
        got = await until(
            ws,
            lambda f: (
                {kind(event(x)) for x in f if not is_reply(x)} >= {"partial", "bookTicker", "diff"}
            ),
        )
        assert not any(f.startswith('{"stream"') for f in got)  # raw payloads on /ws
        listed = await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert json.loads(listed) == {"result": names, "id": 2}
        r = await ask(ws, {"method": "UNSUBSCRIBE", "params": names[:2], "id": 3})
        assert r == '{"result":null,"id":3}'
        await asyncio.sleep(0.5)  # frames sent before the answer was read
        after = await until(ws, lambda f: len(f) >= 5)
        assert {kind(json.loads(f)) for f in after} == {"diff"}


async def test_one_set_of_depth_streams_costs_one_upstream_subscription_each(
    web: tuple[Service, str], emulator: EmulatorProcess
) -> None:
    _, url = web
    await emulator_settles(emulator, 0, 0)  # no earlier test's upstream left
    names = ["btcusdt@depth5", "btcusdt@bookTicker", "btcusdt@depth@100ms"]
    base = ws_url(url)
    async with (
        websockets.connect(base + "/ws/" + "/".join(names)) as a,
        websockets.connect(base + "/ws/" + "/".join(names)) as b,
        websockets.connect(base + "/stream?streams=" + "/".join(names)) as c,
        websockets.connect(base + "/ws") as d,
    ):
        assert await ask(d, {"method": "SUBSCRIBE", "params": names, "id": 1}) == (
            '{"result":null,"id":1}'
        )
        for ws in (a, b, c, d):  # every consumer gets each kind of event
            await until(
                ws,
                lambda f: (
                    {kind(event(x)) for x in f if not is_reply(x)}
                    >= {"partial", "bookTicker", "diff"}
                ),
            )
        await emulator_settles(emulator, 1, 3)  # one upstream connection, three streams
        hub = (await healthz(url))["proxy"]["streams"]["hub"]
        assert (hub["upstream_streams"], hub["subscribes"], hub["consumers"]) == (3, 3, 12)
        m = await metrics(url)
        assert m["livecandle_stream_proxy_upstream_streams"] == 3
        assert m["livecandle_stream_proxy_connections"] == 4
        assert m["livecandle_stream_proxy_consumers"] == 12


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-binance's websockets import
async def test_python_binance_depth_sockets_read_through_the_proxy(
    web: tuple[Service, str],
) -> None:
    from binance import AsyncClient, BinanceSocketManager

    _, url = web
    client = AsyncClient()  # no request: only its sockets are used
    try:
        bsm = BinanceSocketManager(client)
        bsm.STREAM_URL = ws_url(url) + "/"  # the only change
        async with bsm.depth_socket("BTCUSDT", depth=BinanceSocketManager.WEBSOCKET_DEPTH_5) as s:
            msg = await asyncio.wait_for(s.recv(), 20)
            assert list(msg) == ["lastUpdateId", "bids", "asks"] and len(msg["bids"]) == 5
        async with bsm.depth_socket("BTCUSDT", interval=100) as s:  # diffs, 100 ms
            first = await asyncio.wait_for(s.recv(), 20)
            second = await asyncio.wait_for(s.recv(), 20)
            assert first["e"] == second["e"] == "depthUpdate"
            assert second["U"] == first["u"] + 1
        async with bsm.symbol_book_ticker_socket("ETHUSDT") as s:
            msg = await asyncio.wait_for(s.recv(), 20)
            assert msg["s"] == "ETHUSDT" and float(msg["b"]) < float(msg["a"])
    finally:
        await client.close_connection()


# -- health and metrics -------------------------------------------------------------------


async def test_health_and_metrics_count_what_the_proxy_answered(
    web: tuple[Service, str],
) -> None:
    svc, url = web
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        before = await metrics(url)
        q = {"symbol": "ETHUSDT", "limit": "3"}  # trades are always forwarded
        assert (await c.get("/api/v3/aggTrades", params=q)).status_code == 200
        avg = {"symbol": "ETHUSDT"}  # no candles in this web-only service: forwarded
        assert (await c.get("/api/v3/avgPrice", params=avg)).status_code == 200
        assert (await c.get("/api/v3/avgPrice", params=avg)).status_code == 200  # kept 1 s
        budget = svc.rest.budget
        budget.set_limit(budget.used, 60_000)  # the budget spent: the proxy's own 429
        assert budget.room(Priority.PROXY) < 4
        q["limit"] = "4"
        assert (await c.get("/api/v3/aggTrades", params=q)).status_code == 429
        after = await metrics(url)
        body = await healthz(url)

    def delta(answer: str) -> float:
        name = f'livecandle_proxy_requests_total{{answer="{answer}"}}'
        return after[name] - before[name]

    assert (delta("forwarded"), delta("cached"), delta("refused_429")) == (2, 1, 1)
    rest = body["proxy"]["rest"]
    assert rest["refused_429"] == after['livecandle_proxy_requests_total{answer="refused_429"}']
    assert rest["forwarded"] == after['livecandle_proxy_requests_total{answer="forwarded"}']
    assert set(body["proxy"]) == {"rest", "books", "streams"}
    assert body["proxy"]["streams"]["readers_dropped"] == 0
    assert after["livecandle_stream_proxy_readers_dropped_total"] == 0
