"""The HTTP API over real HTTP against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from livecandle.domain.model import SeriesKey
from livecandle.runtime.redis_server import RedisServer
from livecandle.store import Store
from tests.builders import kline_member
from tests.helpers import EmulatorProcess, binance_client
from tests.integration.live_support import running_service

MIN = 60_000
T0 = 1_700_000_040_000  # a minute boundary
TOKEN = "s3cret-token"
S1M = SeriesKey.of("BTCUSDT", "1m")


def live(open_ms: int, previous: int | None = None) -> bytes:
    def fields(t: int) -> dict[str, Any]:
        return {
            "time": t,
            "close_time": t + MIN - 1,
            "open": "100.00000000",
            "high": "102.00000000",
            "low": "99.50000000",
            "close": "101.00000000",
            "volume": "3.00000000",
            "quote_volume": "300.00000000",
            "trades": 7,
            "taker_buy_volume": "1.00000000",
            "taker_buy_quote_volume": "100.00000000",
        }

    value: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        **fields(open_ms),
        "is_incomplete": True,
        "source": "live",
        "complete": True,
        "previous": None,
    }
    if previous is not None:
        value["previous"] = {
            **fields(previous),
            "is_incomplete": False,
            "confirmed": False,
            "source": "live",
        }
    return msgspec.json.encode(value)


@pytest.fixture
async def web(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(
        redis_url, emulator, "1m,5m,1h", roles=("web",), port=0, write_token=TOKEN
    ) as svc:
        assert svc.web_url is not None
        async with httpx.AsyncClient(base_url=svc.web_url, timeout=10) as client:
            yield client


async def seed(redis: aioredis.Redis, n: int = 10, live_value: bytes | None = None) -> Store:
    store = Store(redis)
    await store.write_candles(
        S1M, [(T0 + i * MIN, kline_member(T0 + i * MIN)) for i in range(n)], 1
    )
    if live_value is not None:
        await store.set_live_candle(S1M, live_value)
    return store


async def test_merge_rule_official_then_unconfirmed_then_forming(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    last = T0 + 9 * MIN
    await seed(redis, 10, live(last + 2 * MIN, previous=last + MIN))
    r = await web.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
    assert r.status_code == 200
    body = r.json()
    assert body["latest"] == last
    times = [c[0] for c in body["candles"]]
    assert times == sorted(set(times))
    assert [c[12] for c in body["candles"]][-3:] == ["official", "unconfirmed", "forming"]
    assert times[-2:] == [last + MIN, last + 2 * MIN]
    assert body["candles"][0][:12] == json.loads(kline_member(T0))


async def test_official_wins_once_stored(web: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    last = T0 + 9 * MIN
    store = await seed(redis, 10, live(last + 2 * MIN, previous=last + MIN))
    await store.write_candles(
        S1M, [(last + MIN, kline_member(last + MIN, close="100.50000000"))], 2
    )
    body = (await web.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1m"})).json()
    states = {c[0]: c[12] for c in body["candles"]}
    assert states[last + MIN] == "official"  # the live copy is no longer served
    assert body["candles"][-1][12] == "forming"
    assert sum(1 for c in body["candles"] if c[0] == last + MIN) == 1
    lc = (await web.get("/live-candle", params={"symbol": "BTCUSDT", "interval": "1m"})).json()
    assert lc["previous"] is None and lc["candle"]["time"] == last + 2 * MIN


async def test_cached_official_rows_follow_every_write(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    store = await seed(redis, 10, live(T0 + 11 * MIN))
    params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 5}
    first = (await web.get("/api/klines", params=params)).json()
    again = (await web.get("/api/klines", params=params)).json()  # from the cache
    assert first == again
    await store.write_candles(
        S1M, [(T0 + 10 * MIN, kline_member(T0 + 10 * MIN, "100.25000000"))], 2
    )
    after = (await web.get("/api/klines", params=params)).json()
    assert after["latest"] == T0 + 10 * MIN
    assert [c[0] for c in after["candles"] if c[12] == "official"][-1] == T0 + 10 * MIN
    assert after["candles"][-2][4] == "100.25000000"
    mirror = (await web.get("/api/v3/klines", params=params)).json()
    assert mirror[-2][0] == T0 + 10 * MIN  # the mirror shares the cache, and follows too


async def test_start_end_and_limit(web: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    await seed(redis, 10, live(T0 + 11 * MIN))
    r = await web.get(
        "/api/klines",
        params={"symbol": "BTCUSDT", "interval": "1m", "start": T0 + MIN, "end": T0 + 3 * MIN},
    )
    assert [c[0] for c in r.json()["candles"]] == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    r = await web.get("/api/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": 2})
    assert [c[12] for c in r.json()["candles"]] == ["official", "official", "forming"]


@pytest.mark.parametrize(
    ("params", "field", "value"),
    [
        ({"interval": "1m"}, "symbol", None),
        ({"symbol": "DOGEUSDT", "interval": "1m"}, "symbol", "DOGEUSDT"),
        ({"symbol": "BTCUSDT", "interval": "7m"}, "interval", "7m"),
        ({"symbol": "BTCUSDT", "interval": "3m"}, "interval", "3m"),  # real, not served
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"}, "limit", "abc"),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}, "limit", "0"),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "100000"}, "limit", "100000"),
        ({"symbol": "BTCUSDT", "interval": "1m", "start": "-5"}, "start", "-5"),
        ({"symbol": "BTCUSDT", "interval": "1m", "start": "1.5"}, "start", "1.5"),
        ({"symbol": "BTCUSDT", "interval": "1m", "start": str(T0 + 5)}, "start", T0 + 5),
        (
            {"symbol": "BTCUSDT", "interval": "1m", "start": str(T0 + MIN), "end": str(T0)},
            "start",
            T0 + MIN,
        ),
    ],
)
async def test_bad_chart_queries_are_400_naming_field_and_value(
    web: httpx.AsyncClient, params: dict[str, str], field: str, value: object
) -> None:
    r = await web.get("/api/klines", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field and body["value"] == value
    assert field in body["error"]


async def save(
    web: httpx.AsyncClient, body: object, token: str | None = TOKEN, raw: bytes | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = raw if raw is not None else json.dumps(body).encode()
    return await web.post(
        "/save-live-candle",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
    )


GOOD = {
    "symbol": "BTCUSDT",
    "interval": "1m",
    "time": T0 + 20 * MIN,
    "open": "100.5",
    "high": "101",
    "low": "100",
    "close": "100.75",
    "volume": "2.5",
    "is_incomplete": True,
    "source": "live",
}


async def test_save_live_candle_writes_only_live_data(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    store = await seed(redis, 10)
    before = await redis.zrange(store.keys.klines(S1M), 0, -1, withscores=True)
    r = await save(web, GOOD)
    assert r.status_code == 200, r.text
    stored = msgspec.json.decode(await redis.get("live_candle:BTCUSDT:1m"))
    assert (stored["time"], stored["close"], stored["source"]) == (
        T0 + 20 * MIN,
        "100.75000000",
        "live",
    )
    assert await redis.zrange(store.keys.klines(S1M), 0, -1, withscores=True) == before
    r = await web.get("/live-candle", params={"symbol": "BTCUSDT", "interval": "1m"})
    assert r.json()["candle"]["close"] == "100.75000000"


async def test_save_live_candle_auth(web: httpx.AsyncClient) -> None:
    assert (await save(web, GOOD, token=None)).status_code == 401
    assert (await save(web, GOOD, token="wrong")).status_code == 401


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"time": T0 + 20 * MIN + 5}, 400, "time"),
        ({"time": "soon"}, 400, "time"),
        ({"open": 100.5}, 400, "open"),  # floats lose money: decimal strings only
        ({"high": "abc"}, 400, "high"),
        ({"low": "100.9"}, 400, "low"),  # low above open
        ({"high": "100.6"}, 400, "high"),  # high below close
        ({"symbol": "NOPE"}, 400, "symbol"),
        ({"interval": "1M"}, 400, "interval"),
        ({"is_incomplete": False}, 400, "is_incomplete"),
        ({"source": "official"}, 400, "source"),
        ({"color": "red"}, 400, "color"),
        ({"time": T0 + 5 * MIN}, 409, "time"),  # official data exists there
        ({"volume": "1.123456789"}, 400, "volume"),
        ({"close_time": "garbage"}, 400, "close_time"),
        ({"close_time": T0 + 21 * MIN}, 400, "close_time"),  # not this candle's last ms
    ],
)
async def test_save_live_candle_refuses_bad_bodies(
    web: httpx.AsyncClient,
    redis: aioredis.Redis,
    change: dict[str, object],
    status: int,
    field: str,
) -> None:
    await seed(redis, 10)
    r = await save(web, {**GOOD, **change})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert await redis.get("live_candle:BTCUSDT:1m") is None  # nothing written


async def test_save_live_candle_refuses_a_future_period(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    future = (int(time.time() * 1000) // MIN + 2) * MIN  # the period after the next
    r = await save(web, {**GOOD, "time": future})
    assert r.status_code == 400 and r.json()["field"] == "time", r.text
    assert "future" in r.json()["error"]
    assert await redis.get("live_candle:BTCUSDT:1m") is None


async def test_save_live_candle_refuses_non_json_arrays_and_oversized(
    web: httpx.AsyncClient,
) -> None:
    assert (await save(web, None, raw=b"{not json")).status_code == 400
    assert (await save(web, [1, 2])).status_code == 400
    big = {**GOOD, "open": "1" + "0" * 5000}
    r = await save(web, big)
    assert r.status_code == 413 and r.json()["field"] == "body"
    deep = b"[" * 1000 + b"]" * 1000  # 2 kB, under the size limit, too deep to decode
    r = await save(web, None, raw=deep)
    assert r.status_code == 400 and r.json()["field"] == "body", r.text
    r = await save(web, None, raw=b'{"x":' + b"[" * 999 + b"]" * 999 + b"}")
    assert r.status_code == 400 and r.json()["field"] == "body", r.text


async def test_save_is_disabled_without_a_token(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> None:
    async with (
        running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url)) as client,
    ):
        r = await client.post(
            "/save-live-candle", json=GOOD, headers={"Authorization": "Bearer anything"}
        )
        assert r.status_code == 403 and "disabled" in r.json()["error"]


async def test_binance_compatible_klines(web: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    await seed(redis, 10, live(T0 + 10 * MIN))
    r = await web.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
    rows = r.json()
    assert rows[0] == json.loads(kline_member(T0))
    assert len(rows) == 11 and rows[-1][0] == T0 + 10 * MIN and len(rows[-1]) == 12
    r = await web.get(
        "/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "1m", "startTime": T0 + 1, "limit": 2},
    )
    assert [x[0] for x in r.json()] == [T0 + MIN, T0 + 2 * MIN]
    for params, code in [
        ({"symbol": "NOPE", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "9m"}, -1120),
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "1m", "endTime": "x"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "foo": "1"}, -1104),
    ]:
        r = await web.get("/api/v3/klines", params=params)
        assert r.status_code == 400 and r.json()["code"] == code, (params, r.text)


async def test_live_rows_respect_start(web: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    await seed(redis, 10, live(T0 + 11 * MIN, previous=T0 + 10 * MIN))
    q = {"symbol": "BTCUSDT", "interval": "1m"}
    for start in (T0 + 5 * MIN, T0 + 11 * MIN, T0 + 30 * MIN):
        rows = (await web.get("/api/klines", params={**q, "start": start})).json()["candles"]
        assert all(r[0] >= start for r in rows), (start, [r[0] for r in rows])
    rows = (await web.get("/api/klines", params={**q, "start": T0 + 11 * MIN})).json()["candles"]
    assert [(r[0], r[12]) for r in rows] == [(T0 + 11 * MIN, "forming")]


async def test_ticker_price_without_a_trade_is_the_newest_official_close(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    store = await seed(redis, 3)
    await store.write_candles(
        S1M, [(T0 + 3 * MIN, kline_member(T0 + 3 * MIN, close="100.25000000"))], 2
    )
    r = await web.get("/api/v3/ticker/price", params={"symbol": "BTCUSDT"})
    assert r.json() == {"symbol": "BTCUSDT", "price": "100.25000000"}
    # a served symbol with no data at all yet is the exchange's (the proxy forwards)
    rows = (await web.get("/api/v3/ticker/price")).json()
    assert rows[0] == r.json() and [x["symbol"] for x in rows] == ["BTCUSDT", "ETHUSDT"]


async def test_binance_small_endpoints(web: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    await redis.set("live_price:BTCUSDT", b'{"symbol":"BTCUSDT","price":"100.5","time":1}')
    assert (await web.get("/api/v3/ping")).json() == {}
    assert (await web.get("/api/v3/time")).json()["serverTime"] > 1_700_000_000_000
    info = (await web.get("/api/v3/exchangeInfo")).json()
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    t = (await web.get("/api/v3/ticker/price", params={"symbol": "BTCUSDT"})).json()
    assert t == {"symbol": "BTCUSDT", "price": "100.5"}
    assert (await web.get("/api/v3/ticker/price")).json()[0] == t
    r = await web.get("/api/v3/ticker/price", params={"symbol": "NOPE"})
    assert r.json()["code"] == -1121


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-binance's websockets import
async def test_an_unmodified_binance_client_reads_the_mirror(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    await seed(redis, 10, live(T0 + 10 * MIN))

    def read() -> tuple[list[Any], list[Any]]:
        with binance_client(str(web.base_url)) as client:
            rows = client.get_klines(symbol="BTCUSDT", interval="1m", limit=5)
            # a range Redis holds (older ones are the exchange's: the proxy forwards)
            hist = client.get_klines(
                symbol="BTCUSDT", interval="1m", startTime=T0, endTime=T0 + 9 * MIN
            )
            return rows, hist

    rows, hist = await asyncio.to_thread(read)
    assert [r[0] for r in rows] == [T0 + i * MIN for i in range(6, 11)]
    assert [r[0] for r in hist] == [T0 + i * MIN for i in range(10)]


async def test_metadata_symbols_health_metrics_openapi(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    await seed(redis, 3)
    meta = (await web.get("/api/metadata", params={"symbol": "BTCUSDT", "interval": "1m"})).json()
    assert (meta["earliest"], meta["latest"], meta["count"]) == (T0, T0 + 2 * MIN, 3)
    assert (await web.get("/api/symbols")).json() == {
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "intervals": ["1m", "5m", "1h"],
        # nothing has read the exchange's listing into this Redis
        "status": [
            {"symbol": "BTCUSDT", "status": "unknown", "followed": None},
            {"symbol": "ETHUSDT", "status": "unknown", "followed": None},
        ],
    }
    h = await web.get("/healthz")
    assert h.status_code == 200 and h.json()["redis"]["ok"] is True
    m = (await web.get("/metrics")).text
    assert "livecandle_http_requests_total" in m
    for line in m.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2
    spec = (await web.get("/openapi.json")).json()
    for path in (
        "/api/klines",
        "/live-candle",
        "/save-live-candle",
        "/api/v3/klines",
        "/api/metadata",
        "/healthz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    params = {p["name"]: p for p in spec["paths"]["/api/klines"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 5000
    assert params["symbol"]["required"] is True


async def test_openapi_documents_every_status_the_handlers_answer(
    web: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    """Each answer below, good or bad, has its status documented for its operation."""
    await seed(redis, 3)
    spec = (await web.get("/openapi.json")).json()
    q = {"symbol": "BTCUSDT", "interval": "1m"}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"symbol": "BTCUSDT", "interval": "1m", "time": T0, "open": "1", "high": "1"}
    requests: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("get", "/api/klines", {"params": q}, {}),
        ("get", "/api/klines", {"params": {**q, "start": "-1"}}, {}),
        ("get", "/api/klines", {"params": {**q, "start": str(T0 + 1)}}, {}),
        ("get", "/api/klines", {"params": {**q, "end": "9" * 16}}, {}),
        ("get", "/live-candle", {"params": {"symbol": "BTCUSDT"}}, {}),
        ("get", "/api/metadata", {"params": {**q, "interval": "2m"}}, {}),
        ("post", "/save-live-candle", {"content": b"{"}, auth),
        ("post", "/save-live-candle", {"json": body}, {}),
        ("post", "/save-live-candle", {"json": {**body, "low": "1", "close": "1"}}, auth),
        ("post", "/save-live-candle", {"content": b"x" * 5000}, auth),
        ("get", "/api/v3/ping", {"params": {"x": "1"}}, {}),
        ("get", "/api/v3/time", {"params": {"x": "1"}}, {}),
        ("get", "/api/v3/exchangeInfo", {"params": {"symbols": "[1]"}}, {}),
        ("get", "/api/v3/klines", {"params": {**q, "startTime": ""}}, {}),
        ("get", "/api/v3/uiKlines", {"params": {**q, "limit": "0"}}, {}),
        ("get", "/api/v3/ticker/price", {"params": {"symbol": "X"}}, {}),
        ("get", "/healthz", {}, {}),
        ("get", "/metrics", {}, {}),
    ]
    seen = set()
    for method, path, kw, headers in requests:
        r = await web.request(method.upper(), path, headers=headers, **kw)
        assert r.status_code < 500, (path, r.text)
        documented = spec["paths"][path][method]["responses"]
        assert str(r.status_code) in documented, (path, kw, r.status_code, list(documented))
        assert "422" not in documented, path
        seen.add(r.status_code)
    assert seen == {200, 400, 401, 409, 413}
    post = spec["paths"]["/save-live-candle"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    klines = {p["name"]: p["schema"] for p in spec["paths"]["/api/v3/klines"]["get"]["parameters"]}
    assert klines["symbol"]["enum"] == ["BTCUSDT", "ETHUSDT"]
    assert klines["startTime"]["pattern"] == "^[0-9]{1,20}$"
    ticker = spec["paths"]["/api/v3/ticker/price"]["get"]["parameters"]
    pattern = next(p["schema"]["pattern"] for p in ticker if p["name"] == "symbols")
    assert re.fullmatch(pattern, '["BTCUSDT","ETHUSDT"]')
    assert not re.fullmatch(pattern, '["BTCUSDT","DOGEUSDT"]')


async def test_wrong_method_is_405_with_allow(web: httpx.AsyncClient) -> None:
    r = await web.request("TRACE", "/api/symbols")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = await web.get("/save-live-candle")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_symbol_and_symbols_together_are_refused_like_binance(
    web: httpx.AsyncClient,
) -> None:
    for path in ("/api/v3/ticker/price", "/api/v3/exchangeInfo"):
        r = await web.get(path, params={"symbol": "BTCUSDT", "symbols": '["ETHUSDT"]'})
        assert r.status_code == 400 and r.json()["code"] == -1128, (path, r.text)


async def test_times_past_year_9999_are_refused(web: httpx.AsyncClient) -> None:
    q = {"symbol": "BTCUSDT", "interval": "1m"}
    for extra in ({}, {"limit": "10"}, {"x": "1"}):  # the fast path and the framework's
        r = await web.get("/api/klines", params={**q, **extra, "end": str(253_402_300_800_000)})
        assert r.status_code == 400 and r.json()["field"] == "end", (extra, r.text)


async def test_redis_down_is_503_naming_redis_not_500(
    tmp_path: Path, emulator: EmulatorProcess
) -> None:
    server = RedisServer(tmp_path / "redis", persist=False, tcp=True)
    server.start()
    try:
        async with running_service(
            server.url, emulator, "1m", roles=("web",), port=0, write_token=TOKEN
        ) as svc:
            assert svc.web_url is not None
            async with httpx.AsyncClient(base_url=svc.web_url, timeout=30) as client:
                q = {"symbol": "BTCUSDT", "interval": "1m"}
                assert (await client.get("/api/klines", params=q)).status_code == 200
                server.stop()
                for path, params in [
                    ("/api/klines", q),
                    ("/api/klines", {**q, "x": "1"}),
                    ("/live-candle", q),
                    ("/api/metadata", q),
                    ("/api/v3/klines", q),
                    ("/api/v3/ticker/price", {}),
                ]:
                    r = await client.get(path, params=params)
                    assert r.status_code == 503, (path, params, r.status_code, r.text)
                    if path.startswith("/api/v3/"):
                        assert r.json()["code"] == -1001
                    else:
                        assert "Redis is unreachable" in r.json()["error"]
                h = await client.get("/healthz")
                assert h.status_code == 503 and h.json()["redis"]["ok"] is False
    finally:
        server.stop()


async def test_no_query_can_make_a_500(web: httpx.AsyncClient) -> None:
    weird = [
        "",
        "%00",
        "1e309",
        "-0",
        "99999999999999999999999",
        "[]",
        "BTCUSDT\x00",
        "'; DROP",
        "\uff11",  # a full-width digit one
        "nan",
    ]
    for path in (
        "/api/klines",
        "/live-candle",
        "/api/metadata",
        "/api/v3/klines",
        "/api/v3/ticker/price",
        "/api/v3/exchangeInfo",
    ):
        for v in weird:
            for field in ("symbol", "interval", "start", "end", "limit", "startTime", "symbols"):
                r = await web.get(path, params={"symbol": "BTCUSDT", "interval": "1m", field: v})
                assert r.status_code < 500, (path, field, v, r.text)
