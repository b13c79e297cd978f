"""The drop-in Binance proxy's REST side (issue 11): the real service (fetcher, stream,
web) on a real redis-server, the emulator upstream, unmodified ccxt and python-binance
clients pointed at the proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.domain.intervals import MINUTE_MS, parse_interval
from livecandle.domain.model import SeriesKey, to_units
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.exchange.binance.weights import Priority
from livecandle.runtime.service import Service
from livecandle.store import Keys, Store
from livecandle.web.proxy.upstream import Upstream
from tests.helpers import EmulatorProcess, binance_client
from tests.integration.live_support import running_service

FOLLOWED = "BTCUSDT,ETHUSDT"
S1M = SeriesKey("BTCUSDT", parse_interval("1m"))
FULL_24HR = [
    "symbol",
    "priceChange",
    "priceChangePercent",
    "weightedAvgPrice",
    "prevClosePrice",
    "lastPrice",
    "lastQty",
    "bidPrice",
    "bidQty",
    "askPrice",
    "askQty",
    "openPrice",
    "highPrice",
    "lowPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
]
MINI = [
    "symbol",
    "openPrice",
    "highPrice",
    "lowPrice",
    "lastPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
]


@pytest.fixture(scope="module")
def market() -> Iterator[EmulatorProcess]:
    """Three symbols, two followed: BNBUSDT is on the exchange only."""
    with EmulatorProcess(
        "--rate", "20", "--history-days", "3", "--seed", "11", symbols="BTCUSDT,ETHUSDT,BNBUSDT"
    ) as emu:
        yield emu


@pytest.fixture
async def proxy(
    redis_url: str, redis: aioredis.Redis, market: EmulatorProcess
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    market.control(reset_limits=True, weight_limit=6000, enforce_weights=True)
    async with (
        running_service(
            redis_url,
            market,
            "1m,1h",
            roles=("fetcher", "stream", "web"),
            symbols=FOLLOWED,
            port=0,
            backfill_candles=1500,  # a day and more of 1m candles: tickers from Redis
            binance_fapi_url=market.rest_url,
            binance_dapi_url=market.rest_url,
            proxy_follow_cap=0,  # BNBUSDT stays forwarded (on demand: test_proxy_demand.py)
        ) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=30) as web,
    ):
        await _wait_for_live(web)
        yield svc, web


async def _wait_for_live(web: httpx.AsyncClient) -> None:
    """Until both followed symbols have a live price (the stream runs)."""
    async with asyncio.timeout(30):
        while True:
            r = await web.get("/api/v3/ticker/price", params={"symbols": '["BTCUSDT","ETHUSDT"]'})
            if r.status_code == 200 and len(r.json()) == 2:
                return
            await asyncio.sleep(0.2)


async def test_exchange_info_is_the_exchanges_own_for_every_symbol_with_its_parameters(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess, store: Store
) -> None:
    _, web = proxy
    upstream = await _get_json(market.rest_url + "/api/v3/exchangeInfo")
    mine = (await web.get("/api/v3/exchangeInfo")).json()
    assert mine["symbols"] == upstream["symbols"]  # filters, precisions... as the exchange's
    assert [s["symbol"] for s in mine["symbols"]] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert mine["rateLimits"] == upstream["rateLimits"]
    stored = await store.exchange_info()
    assert stored is not None and b'"BNBUSDT"' in stored[0]
    one = (await web.get("/api/v3/exchangeInfo", params={"symbol": "BNBUSDT"})).json()
    assert [s["symbol"] for s in one["symbols"]] == ["BNBUSDT"]
    hidden = await web.get(
        "/api/v3/exchangeInfo", params={"symbols": '["ETHUSDT"]', "showPermissionSets": "false"}
    )
    assert hidden.json()["symbols"][0]["permissionSets"] == []
    trading = await web.get("/api/v3/exchangeInfo", params={"symbolStatus": "BREAK"})
    assert trading.json()["symbols"] == []
    for params, code in [
        ({"symbol": "NOPE"}, -1121),
        ({"symbols": '["BTCUSDT","BTCUSDT"]'}, -1151),
        ({"symbolStatus": "SLEEPING"}, -1122),
        ({"symbol": "BTCUSDT", "symbolStatus": "TRADING"}, -1128),
        ({"symbols": "[BTCUSDT"}, -1100),
        ({"foo": "1"}, -1104),
    ]:
        r = await web.get("/api/v3/exchangeInfo", params=params)
        assert r.status_code == 400 and r.json()["code"] == code, (params, r.text)


def test_the_emulator_answers_tickers_in_binances_shapes_and_weights(
    market: EmulatorProcess,
) -> None:
    market.control(reset_limits=True)
    base = market.rest_url + "/api/v3/"
    with httpx.Client(base_url=base) as c:
        r = c.get("ticker/24hr", params={"symbol": "BTCUSDT"})
        t = r.json()
        assert list(t) == FULL_24HR and r.headers["x-mbx-used-weight-1m"] == "2"
        assert t["closeTime"] - t["openTime"] == 86_400_000
        assert t["count"] == t["lastId"] - t["firstId"] + 1 > 0
        assert to_units(t["lowPrice"]) <= to_units(t["lastPrice"]) <= to_units(t["highPrice"])
        assert len(t["priceChangePercent"].rsplit(".", 1)[1]) == 3
        r = c.get("ticker/24hr")
        assert [x["symbol"] for x in r.json()] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
        assert r.headers["x-mbx-used-weight-1m"] == "82"  # + 80 for all symbols
        mini = c.get("ticker/24hr", params={"symbols": '["ETHUSDT"]', "type": "MINI"}).json()
        assert list(mini[0]) == MINI
        rolling = c.get("ticker", params={"symbol": "BTCUSDT", "windowSize": "5m"}).json()
        assert rolling["openTime"] % MINUTE_MS == 0 and "prevClosePrice" not in rolling
        # the window's volume is its 1m klines' (the newest may have grown since)
        rows = c.get(
            "klines",
            params={"symbol": "BTCUSDT", "interval": "1m", "startTime": rolling["openTime"]},
        ).json()
        assert rows[0][0] == rolling["openTime"]
        traded = [row for row in rows if row[8] > 0]  # an empty kline's open is a carry
        assert traded[0][1] == rolling["openPrice"]
        closed = sum(to_units(row[5]) for row in rows[:-1])
        assert closed <= to_units(rolling["volume"]) <= sum(to_units(row[5]) for row in rows)
        avg = c.get("avgPrice", params={"symbol": "BTCUSDT"}).json()
        assert list(avg) == ["mins", "price", "closeTime"] and avg["mins"] == 5
        price = c.get("ticker/price", params={"symbol": "BTCUSDT"}).json()
        assert list(price) == ["symbol", "price"]
        for path, params, code in [
            ("ticker/24hr", {"symbol": "NOPE"}, -1121),
            ("ticker/24hr", {"type": "HUGE"}, -1139),
            ("ticker", {}, -1102),
            ("ticker", {"symbol": "BTCUSDT", "windowSize": "8d"}, -1100),
            ("ticker/price", {"symbols": '["BTCUSDT","BTCUSDT"]'}, -1151),
            ("avgPrice", {}, -1102),
        ]:
            r = c.get(path, params=params)
            assert r.status_code == 400 and r.json()["code"] == code, (path, params, r.text)


async def test_tickers_of_followed_symbols_come_from_livecandles_own_data(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess
) -> None:
    _, web = proxy
    asked = await _upstream_tickers(market)
    t = (await web.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"})).json()
    assert list(t) == FULL_24HR
    upstream = await _get_json(market.rest_url + "/api/v3/ticker/24hr", symbol="BTCUSDT")
    # the same market: the proxy's 24 h figures from its candles are the exchange's, to
    # within the trades of the last moments and the minute the window starts on
    assert (
        abs(to_units(t["lastPrice"]) - to_units(upstream["lastPrice"]))
        < to_units(upstream["lastPrice"]) // 100
    )
    assert t["openTime"] % MINUTE_MS == 0
    # a day's window from the stored 1h candles and the 1m ones at its ends: the same
    # figures as the exchange's own rolling day, up to the last seconds' trades (the
    # emulator's history is thin: its few live minutes weigh much; an hour counted twice
    # or missed would be far off)
    day = {"symbol": "BTCUSDT", "windowSize": "1d"}
    mine = (await web.get("/api/v3/ticker", params=day)).json()
    theirs = await _get_json(market.rest_url + "/api/v3/ticker", **day)
    if mine["openTime"] == theirs["openTime"]:  # not across a minute's turn
        assert mine["openPrice"] == theirs["openPrice"]
        assert (
            abs(to_units(mine["volume"]) - to_units(theirs["volume"]))
            < to_units(theirs["volume"]) // 20
        )
        assert abs(mine["count"] - theirs["count"]) < theirs["count"] // 20
    asked += 2  # the test's own requests above
    both = (await web.get("/api/v3/ticker/24hr", params={"symbols": FOLLOWED_JSON})).json()
    assert [x["symbol"] for x in both] == ["BTCUSDT", "ETHUSDT"]
    for x in both:
        assert x["firstId"] == -1  # ours: livecandle keeps no trade ids
    rolling = (
        await web.get("/api/v3/ticker", params={"symbol": "ETHUSDT", "windowSize": "10m"})
    ).json()
    assert rolling["openTime"] % MINUTE_MS == 0 and "bidPrice" not in rolling
    avg = (await web.get("/api/v3/avgPrice", params={"symbol": "BTCUSDT"})).json()
    assert avg["mins"] == 5 and to_units(avg["price"]) > 0
    r = await web.get("/api/v3/ticker/24hr", params={"symbol": "NOPE"})
    assert r.status_code == 400 and r.json()["code"] == -1121
    r = await web.get("/api/v3/ticker/24hr", params={"type": "HUGE"})
    assert r.status_code == 400 and r.json()["code"] == -1139
    price = (await web.get("/api/v3/ticker/price", params={"symbol": "ETHUSDT"})).json()
    assert to_units(price["price"]) > 0
    assert await _upstream_tickers(market) == asked  # none of these went to the exchange
    mini = (await web.get("/api/v3/ticker/24hr", params={"type": "MINI"})).json()
    # all symbols of the exchange: BNBUSDT is not followed, so the exchange answers
    assert [x["symbol"] for x in mini] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert list(mini[0]) == MINI and await _upstream_tickers(market) == asked + 1


async def _get_json(url: str, **params: str) -> Any:
    async with httpx.AsyncClient() as client:
        return (await client.get(url, params=params)).json()


async def _upstream_klines(market: EmulatorProcess) -> int:
    """klines requests the exchange answered so far."""
    by = (await _get_json(market.rest_url + "/_emulator/stats"))["requests_by_endpoint"]
    return int(by.get("klines", 0))


async def _upstream_tickers(market: EmulatorProcess) -> int:
    """Ticker requests the exchange answered so far (not bookTicker: the best bid and ask
    of a FULL 24hr ticker are the exchange's book's, kept 1 s)."""
    by = (await _get_json(market.rest_url + "/_emulator/stats"))["requests_by_endpoint"]
    return sum(
        n
        for name, n in by.items()
        if (name.startswith("ticker") and name != "ticker/bookTicker") or name == "avgPrice"
    )


FOLLOWED_JSON = '["BTCUSDT","ETHUSDT"]'


async def test_klines_older_than_stored_are_fetched_and_stored_and_others_forwarded(
    proxy: tuple[Service, httpx.AsyncClient], store: Store, market: EmulatorProcess
) -> None:
    _, web = proxy
    meta = await store.meta(S1M)
    assert meta.earliest is not None
    start = meta.earliest - 20 * MINUTE_MS
    r = await web.get(
        "/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "1m", "startTime": start, "limit": 25},
    )
    rows = r.json()
    assert [row[0] for row in rows] == [start + i * MINUTE_MS for i in range(25)]
    after = await store.meta(S1M)
    assert after.earliest == start  # stored through the official write path
    # a start between two opens asks for nothing before the stored rows: from Redis, no
    # fetch, no forward
    upstream = await _upstream_klines(market)
    r = await web.get(
        "/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "1m", "startTime": start - 1, "limit": 3},
    )
    assert [row[0] for row in r.json()] == [start + i * MINUTE_MS for i in range(3)]
    assert await _upstream_klines(market) == upstream
    assert (await store.meta(S1M)).earliest == start
    # a symbol that is not followed, and an interval not served: the exchange's rows
    for q in ({"symbol": "BNBUSDT", "interval": "1m"}, {"symbol": "BTCUSDT", "interval": "3m"}):
        r = await web.get("/api/v3/klines", params={**q, "limit": 3})
        assert r.status_code == 200 and len(r.json()) == 3, r.text
    r = await web.get("/api/v3/klines", params={"symbol": "NOPE", "interval": "1m"})
    assert r.status_code == 400 and r.json()["code"] == -1121


async def test_over_budget_the_proxy_answers_429_itself_and_the_exchange_sees_none(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess
) -> None:
    svc, web = proxy
    budget = svc.rest.budget
    limit = budget.used
    budget.set_limit(limit, 60_000)
    while budget.room(Priority.PROXY) < 9:  # room for two aggTrades (weight 4), not three
        limit += 1
        budget.set_limit(limit, 60_000)
    statuses = []
    for n in range(1, 6):  # distinct limits: nothing answered from the short cache
        r = await web.get("/api/v3/aggTrades", params={"symbol": "BNBUSDT", "limit": n})
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["code"] == -1003 and "per 1 MINUTE" in r.json()["msg"]
            assert int(r.headers["retry-after"]) >= 1
            assert int(r.headers["x-mbx-used-weight-1m"]) >= 8
        else:
            assert len(r.json()) == n
    assert statuses == [200, 200, 429, 429, 429]
    # klines of a symbol not followed (the fast read path) get the same 429
    r = await web.get("/api/v3/klines", params={"symbol": "BNBUSDT", "interval": "1m"})
    assert r.status_code == 429 and r.json()["code"] == -1003
    assert int(r.headers["retry-after"]) >= 1
    assert market.state()["rejected_429"] == 0


async def test_signed_requests_are_refused_unless_forwarding_is_allowed(
    proxy: tuple[Service, httpx.AsyncClient],
) -> None:
    _, web = proxy
    for method, path, kw in [
        ("GET", "/api/v3/account", {"params": {"timestamp": 1, "signature": "ab"}}),
        ("GET", "/api/v3/myTrades", {"headers": {"X-MBX-APIKEY": "k"}}),
        ("POST", "/api/v3/order", {"params": {"symbol": "BTCUSDT"}}),
    ]:
        r = await web.request(method, path, **kw)
        assert r.status_code == 401 and r.json()["code"] == -1002, (path, r.text)
        assert "LIVECANDLE_PROXY_FORWARD_SIGNED" in r.json()["msg"]


async def test_an_unmodified_ccxt_client_loads_markets_and_reads_through_the_proxy(
    proxy: tuple[Service, httpx.AsyncClient], market: EmulatorProcess
) -> None:
    import ccxt
    import ccxt.async_support as accxt

    _, web = proxy
    base = str(web.base_url)
    urls = {
        "public": base + "/api/v3",
        "fapiPublic": base + "/fapi/v1",
        "dapiPublic": base + "/dapi/v1",
    }
    since = (await web.get("/api/v3/time")).json()["serverTime"] - 10 * MINUTE_MS

    def sync_reads() -> tuple[Any, ...]:
        ex = ccxt.binance()
        ex.urls["api"].update(urls)
        markets = ex.load_markets()
        return (
            markets,
            ex.fetch_ticker("BTC/USDT"),
            ex.fetch_tickers(),
            ex.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=5),
            ex.fetch_trades("BNB/USDT", limit=5),
            ex.fetch_order_book("BTC/USDT", 20),
        )

    markets, ticker, tickers, ohlcv, trades, book = await asyncio.to_thread(sync_reads)
    stats = await _get_json(market.rest_url + "/_emulator/stats")
    # ccxt's default market types: the futures exchangeInfo went to the futures host
    assert stats["requests_by_endpoint"]["/fapi/v1/exchangeInfo"] >= 1
    assert stats["requests_by_endpoint"]["/dapi/v1/exchangeInfo"] >= 1
    assert {"BTC/USDT", "ETH/USDT", "BNB/USDT"} <= set(markets)
    assert markets["BTC/USDT"]["precision"]["price"] == 0.01
    # best bid/ask come from the order book (another part; absent in this emulator)
    assert ticker["symbol"] == "BTC/USDT" and ticker["last"] > 0 and "bid" in ticker
    assert {"BTC/USDT", "ETH/USDT", "BNB/USDT"} <= set(tickers)
    first = -(-since // MINUTE_MS) * MINUTE_MS
    assert [row[0] for row in ohlcv] == [first + MINUTE_MS * i for i in range(5)]
    assert len(ohlcv) == 5 and trades and trades[0]["symbol"] == "BNB/USDT"
    # the first depth request starts a local book and is forwarded meanwhile: the
    # exchange's book either way (test_order_books.py compares it level by level)
    assert len(book["bids"]) == len(book["asks"]) == 20
    assert book["bids"][0][0] < book["asks"][0][0] and book["nonce"] > 0

    ex = accxt.binance()
    ex.urls["api"].update(urls)
    try:
        await ex.load_markets()
        t = await ex.fetch_ticker("ETH/USDT")
        many = await ex.fetch_tickers(["BTC/USDT", "ETH/USDT"])
        rows = await ex.fetch_ohlcv("ETH/USDT", "1m", since=since, limit=3)
        agg = await ex.fetch_trades("ETH/USDT", limit=3)
        depth = await ex.fetch_order_book("ETH/USDT", 5)
    finally:
        await ex.close()
    assert t["symbol"] == "ETH/USDT" and t["last"] > 0
    assert set(many) == {"BTC/USDT", "ETH/USDT"}
    assert len(rows) == 3 and rows[0][0] >= since - MINUTE_MS and len(agg) == 3
    assert len(depth["bids"]) == len(depth["asks"]) == 5
    assert depth["bids"][0][0] < depth["asks"][0][0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-binance's websockets import
async def test_an_unmodified_python_binance_client_reads_through_the_proxy(
    proxy: tuple[Service, httpx.AsyncClient],
) -> None:
    _, web = proxy
    now = (await web.get("/api/v3/time")).json()["serverTime"]

    def read() -> tuple[Any, ...]:
        with binance_client(str(web.base_url)) as client:
            return (
                client.get_exchange_info(),
                client.get_symbol_ticker(symbol="BTCUSDT"),
                client.get_ticker(symbol="ETHUSDT"),
                client.get_klines(symbol="BTCUSDT", interval="1m", limit=5),
                client.get_historical_klines("BNBUSDT", "1m", now - 30 * MINUTE_MS, now),
                client.get_avg_price(symbol="BTCUSDT"),
            )

    info, price, ticker, klines, hist, avg = await asyncio.to_thread(read)
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert price["symbol"] == "BTCUSDT" and to_units(price["price"]) > 0
    assert ticker["symbol"] == "ETHUSDT" and list(ticker) == FULL_24HR
    assert len(klines) == 5 and klines[-1][0] % MINUTE_MS == 0
    assert 29 <= len(hist) <= 31
    assert avg["mins"] == 5 and to_units(avg["price"]) > 0
    json.dumps(info)  # plain JSON all the way


@pytest.fixture
def store(redis: aioredis.Redis) -> Store:
    return Store(redis, Keys())


async def test_signed_requests_go_untouched_when_the_operator_opts_in(
    market: EmulatorProcess,
) -> None:
    async with BinanceRest(market.rest_url) as rest:
        upstream = Upstream(rest, forward_signed=True)
        try:
            answer = await upstream.forward(
                "/api/v3/account", "timestamp=1&signature=ab", {"x-mbx-apikey": "k"}
            )
            used = rest.budget.weight_sent
        finally:
            await upstream.aclose()
    # the emulator has no account endpoint: its own 404, not the proxy's refusal
    assert answer.status == 404 and upstream.forwarded == 1 and used == 0


class _ClosingOnReuse:
    """A real HTTP/1.1 server that answers the first request of each connection with
    keep-alive and closes the connection, unanswered, when a second request arrives on
    it: an idle timeout crossing a reused connection, as every server has one."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered: list[bytes] = []
        self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.answered.append(head.split(b"\r\n", 1)[0])
            body = b'{"mins":5,"price":"1.00000000","closeTime":1}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"X-MBX-USED-WEIGHT-1M: 2\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # reused: dropped unanswered
            self.dropped += 1
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def test_a_get_on_a_kept_alive_connection_the_exchange_closed_is_sent_again() -> None:
    exchange = _ClosingOnReuse()
    server = await asyncio.start_server(exchange.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with BinanceRest(f"http://127.0.0.1:{port}") as rest:
            upstream = Upstream(rest, forward_signed=True)
            try:
                first = await upstream.forward("/api/v3/avgPrice", "symbol=BTCUSDT")
                again = await upstream.forward("/api/v3/avgPrice", "symbol=ETHUSDT")
                signed = await upstream.forward(
                    "/api/v3/myTrades", "symbol=BTCUSDT&signature=ab", {"x-mbx-apikey": "k"}
                )
                order = await upstream.forward(
                    "/api/v3/order", "symbol=BTCUSDT&signature=ab", {"x-mbx-apikey": "k"}, "POST"
                )
            finally:
                await upstream.aclose()
            # the fetcher's own client gets its answers on the same server
            own = [await rest.get("/api/v3/avgPrice", {"symbol": s}) for s in ("BNB", "XRP")]
    finally:
        server.close()
        await server.wait_closed()
    assert own[0] == own[1] == first.body
    assert exchange.answered[-1] == b"GET /api/v3/avgPrice?symbol=XRP HTTP/1.1"
    assert (first.status, again.status, signed.status) == (200, 200, 200)
    assert exchange.answered[1:3] == [
        b"GET /api/v3/avgPrice?symbol=ETHUSDT HTTP/1.1",
        b"GET /api/v3/myTrades?symbol=BTCUSDT&signature=ab HTTP/1.1",
    ]
    # an order met by the same close is not sent twice: it may have been taken
    assert order.status == 503
    assert exchange.answered[3].startswith(b"GET /api/v3/avgPrice?symbol=BNB")
