"""Local order books against the emulator's: Binance's sync algorithm over real websockets
and REST, the proxy's depth and bookTicker over real HTTP, ccxt and python-binance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.domain.model import format_units, to_units
from livecandle.exchange.binance.order_book import LocalBook
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.runtime.service import Service
from livecandle.web.books import Books
from tests.helpers import EmulatorProcess, binance_client
from tests.integration.live_support import running_service

Book = tuple[dict[int, int], dict[int, int]]


async def until(check: Callable[[], Any], within_s: float = 20.0) -> Any:
    async with asyncio.timeout(within_s):
        while True:
            value = check()
            if value:
                return value
            await asyncio.sleep(0.05)


def levels(rows: list[list[str]]) -> dict[int, int]:
    return {to_units(p): to_units(q) for p, q in rows}


async def emulator_book(emu: EmulatorProcess, symbol: str, update_id: int | None = None) -> Book:
    params: dict[str, Any] = {"symbol": symbol}
    if update_id is not None:
        params["updateId"] = update_id
    async with httpx.AsyncClient() as http:
        r = await http.get(emu.rest_url + "/_emulator/book", params=params)
    r.raise_for_status()
    body = r.json()
    assert update_id is None or body["lastUpdateId"] == update_id
    return levels(body["bids"]), levels(body["asks"])


async def emulator_stats(emu: EmulatorProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        stats: dict[str, Any] = (await http.get(emu.rest_url + "/_emulator/stats")).json()
    return stats


@contextlib.asynccontextmanager
async def books_on(emu: EmulatorProcess, **kwargs: Any) -> AsyncIterator[Books]:
    async with BinanceRest(emu.rest_url) as rest:
        books = Books(rest, emu.ws_url, **kwargs)
        try:
            yield books
        finally:
            await books.aclose()


async def warm(books: Books, symbol: str) -> LocalBook:
    book: LocalBook = await until(lambda: books.book(symbol))
    return book


async def test_the_local_book_equals_the_emulators_at_sampled_update_ids(
    emulator: EmulatorProcess,
) -> None:
    async with books_on(emulator) as books:
        assert books.book("BTCUSDT") is None  # the first request starts it
        book = await warm(books, "BTCUSDT")
        sampled = []
        for _ in range(5):
            seen = book.update_id
            await until(lambda: books.book("BTCUSDT") and book.update_id != seen)  # noqa: B023
            assert book.update_id is not None
            local = (dict(book.bids), dict(book.asks))  # no await between: one update id
            sampled.append(book.update_id)
            assert await emulator_book(emulator, "BTCUSDT", book.update_id) == local
            assert max(local[0]) < min(local[1])
        assert sampled == sorted(set(sampled))
        assert books.stats()["gaps"] == 0


async def test_a_dropped_diff_event_resyncs_the_book_and_it_is_right_again(
    emulator: EmulatorProcess,
) -> None:
    async with books_on(emulator) as books:
        book = await warm(books, "ETHUSDT")
        snapshots = books.stats()["snapshots"]
        async with httpx.AsyncClient() as http:
            r = await http.post(
                emulator.rest_url + "/_emulator/book",
                json={"drop_diffs": {"symbol": "ETHUSDT", "count": 1}},
            )
            r.raise_for_status()
        await until(lambda: book.gaps == 1)
        await until(lambda: books.book("ETHUSDT"))
        assert books.stats()["snapshots"] == snapshots + 1  # a new snapshot, synced again
        seen = book.update_id
        await until(lambda: books.book("ETHUSDT") and book.update_id != seen)
        assert book.update_id is not None
        local = (dict(book.bids), dict(book.asks))
        assert await emulator_book(emulator, "ETHUSDT", book.update_id) == local


async def test_a_cut_upstream_connection_leaves_the_book_right_after_it_reconnects(
    emulator: EmulatorProcess,
) -> None:
    async with books_on(emulator) as books:
        book = await warm(books, "BTCUSDT")
        connects = books.stream.stats()[0]["connects"]
        emulator.control(drop_connections=True)
        await until(lambda: books.stream.stats()[0]["connects"] > connects)
        # the events sent while it reconnected are missed: the next one shows the gap
        await until(lambda: book.gaps == 1)
        seen = book.update_id
        await until(lambda: books.book("BTCUSDT") and book.update_id != seen)
        assert book.update_id is not None
        local = (dict(book.bids), dict(book.asks))
        assert await emulator_book(emulator, "BTCUSDT", book.update_id) == local


async def test_an_idle_book_is_stopped_and_a_request_keeps_it(emulator: EmulatorProcess) -> None:
    async with books_on(emulator, idle_s=1.0) as books:
        await warm(books, "BTCUSDT")
        await warm(books, "ETHUSDT")
        for _ in range(8):  # BTCUSDT asked for all along, ETHUSDT not
            await asyncio.sleep(0.25)
            assert books.book("BTCUSDT") is not None
        await until(lambda: "ETHUSDT" not in books.entries)
        assert "BTCUSDT" in books.entries
        assert books.stats()["stopped"] == 1
        await until(
            lambda: (
                not any(s.startswith("ethusdt@") for g in books.stream.groups for s in g.streams)
            )
        )


async def test_books_beyond_the_cap_are_not_started(emulator: EmulatorProcess) -> None:
    async with books_on(emulator, max_books=1) as books:
        await warm(books, "BTCUSDT")
        assert books.book("ETHUSDT") is None
        assert "ETHUSDT" not in books.entries and books.stats()["refused"] == 1


# -- the proxy ----------------------------------------------------------------------------


@pytest.fixture
async def proxy(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[Service]:
    """The web role on a flushed Redis (nothing of the previous test's)."""
    async with running_service(redis_url, emulator, "1m", roles=("web",), port=0) as svc:
        yield svc


async def proxy_warm(web: httpx.AsyncClient, emu: EmulatorProcess, symbol: str) -> None:
    """Until a depth request of the proxy costs the emulator nothing (served locally)."""

    async def local() -> bool:
        before = (await emulator_stats(emu))["requests_by_endpoint"].get("depth", 0)
        r = await web.get("/api/v3/depth", params={"symbol": symbol, "limit": 5})
        assert r.status_code == 200
        after = (await emulator_stats(emu))["requests_by_endpoint"].get("depth", 0)
        return after == before

    async with asyncio.timeout(20):
        while True:
            if await local():
                return
            await asyncio.sleep(0.1)


async def test_the_proxy_serves_depth_from_its_book_as_the_emulator_has_it(
    proxy: Service, emulator: EmulatorProcess
) -> None:
    async with httpx.AsyncClient(base_url=str(proxy.web_url)) as web:
        cold = await web.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 7})
        assert cold.status_code == 200  # forwarded while the book warms up
        assert len(cold.json()["bids"]) == len(cold.json()["asks"]) == 7
        await proxy_warm(web, emulator, "BTCUSDT")
        before = (await emulator_stats(emulator))["requests_by_endpoint"].get("depth", 0)
        for limit in (1, 20, 100):
            body = (
                await web.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": limit})
            ).json()
            assert list(body) == ["lastUpdateId", "bids", "asks"]
            bids, asks = await emulator_book(emulator, "BTCUSDT", body["lastUpdateId"])
            best_bids = sorted(bids.items(), reverse=True)[:limit]
            best_asks = sorted(asks.items())[:limit]
            assert body["bids"] == [[format_units(p), format_units(q)] for p, q in best_bids]
            assert body["asks"] == [[format_units(p), format_units(q)] for p, q in best_asks]
        default = (await web.get("/api/v3/depth", params={"symbol": "BTCUSDT"})).json()
        assert len(default["bids"]) == 100
        after = (await emulator_stats(emulator))["requests_by_endpoint"].get("depth", 0)
        assert after == before  # all from the local book
        deep = (await web.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 500})).json()
        assert len(deep["bids"]) == 500  # forwarded: beyond what is served locally
        assert (await emulator_stats(emulator))["requests_by_endpoint"]["depth"] == after + 1
        metrics = (await web.get("/metrics")).text.splitlines()
        assert "livecandle_order_books 1" in metrics
        assert 'livecandle_order_books{state="in_sync"} 1' in metrics
        local = next(m for m in metrics if 'depth_requests_total{answer="local"}' in m)
        assert int(local.split()[-1]) >= 4


async def test_the_proxys_book_ticker_is_the_top_of_its_book(
    proxy: Service, emulator: EmulatorProcess
) -> None:
    async with httpx.AsyncClient(base_url=str(proxy.web_url)) as web:
        await proxy_warm(web, emulator, "BTCUSDT")
        await proxy_warm(web, emulator, "ETHUSDT")
        before = (await emulator_stats(emulator))["requests_by_endpoint"].get(
            "ticker/bookTicker", 0
        )

        async def top_id() -> int:
            r = await web.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 1})
            update_id: int = r.json()["lastUpdateId"]
            return update_id

        for _ in range(100):  # a ticker read while the book stood at one update id
            first = await top_id()
            r = await web.get("/api/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"})
            ticker = r.json()
            if await top_id() == first:
                break
        else:
            pytest.fail("the book never stood still for three requests")
        assert list(ticker) == ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"]
        bids, asks = await emulator_book(emulator, "BTCUSDT", first)
        bid, ask = max(bids), min(asks)
        assert ticker["symbol"] == "BTCUSDT"
        assert (to_units(ticker["bidPrice"]), to_units(ticker["bidQty"])) == (bid, bids[bid])
        assert (to_units(ticker["askPrice"]), to_units(ticker["askQty"])) == (ask, asks[ask])
        two = (
            await web.get("/api/v3/ticker/bookTicker", params={"symbols": '["ETHUSDT","BTCUSDT"]'})
        ).json()
        assert [t["symbol"] for t in two] == ["ETHUSDT", "BTCUSDT"]
        after = (await emulator_stats(emulator))["requests_by_endpoint"].get("ticker/bookTicker", 0)
        assert after == before  # local answers
        every = (await web.get("/api/v3/ticker/bookTicker")).json()  # forwarded
        assert {t["symbol"] for t in every} == {"BTCUSDT", "ETHUSDT"}
        assert (await emulator_stats(emulator))["requests_by_endpoint"][
            "ticker/bookTicker"
        ] == after + 1


async def test_the_proxy_answers_binances_errors_for_bad_parameters(proxy: Service) -> None:
    async with httpx.AsyncClient(base_url=str(proxy.web_url)) as web:
        cases = [
            ("/api/v3/depth", {}, -1102),
            ("/api/v3/depth", {"symbol": "btc usdt"}, -1100),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "x"}, -1100),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "0"}, -1130),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "foo": "1"}, -1104),
            ("/api/v3/depth", {"symbol": "NOSUCHPAIR"}, -1121),
            ("/api/v3/ticker/bookTicker", {"symbol": "NOSUCHPAIR"}, -1121),
            ("/api/v3/ticker/bookTicker", {"symbols": "[BTCUSDT]"}, -1100),
            ("/api/v3/ticker/bookTicker", {"symbols": '["BTCUSDT","BTCUSDT"]'}, -1151),
            ("/api/v3/ticker/bookTicker", {"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}, -1128),
        ]
        for path, params, code in cases:
            r = await web.get(path, params=params)
            assert r.status_code == 400, (path, params, r.text)
            assert r.json()["code"] == code, (path, params, r.text)
            assert set(r.json()) == {"code", "msg"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the clients' websockets imports
async def test_ccxt_and_python_binance_read_the_emulators_book_through_the_proxy(
    proxy: Service, emulator: EmulatorProcess
) -> None:
    import ccxt

    async with httpx.AsyncClient(base_url=str(proxy.web_url)) as web:
        await proxy_warm(web, emulator, "BTCUSDT")
    web_url = str(proxy.web_url)

    def with_ccxt() -> dict[str, Any]:
        exchange = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
        exchange.urls["api"]["public"] = web_url + "/api/v3"  # nothing else changed
        exchange.load_markets()
        book: dict[str, Any] = exchange.fetch_order_book("BTC/USDT", 20)
        return book

    book = await asyncio.to_thread(with_ccxt)
    bids, asks = await emulator_book(emulator, "BTCUSDT", book["nonce"])
    assert len(book["bids"]) == len(book["asks"]) == 20

    def exact(rows: list[list[float]]) -> list[tuple[int, int]]:  # ccxt's floats
        return [(to_units(f"{p:.8f}"), to_units(f"{q:.8f}")) for p, q in rows]

    assert exact(book["bids"]) == sorted(bids.items(), reverse=True)[:20]
    assert exact(book["asks"]) == sorted(asks.items())[:20]

    def with_python_binance() -> dict[str, Any]:
        with binance_client(web_url) as client:
            got: dict[str, Any] = client.get_order_book(symbol="BTCUSDT", limit=10)
            return got

    got = await asyncio.to_thread(with_python_binance)
    bids, asks = await emulator_book(emulator, "BTCUSDT", got["lastUpdateId"])
    assert levels(got["bids"]) == dict(sorted(bids.items(), reverse=True)[:10])
    assert levels(got["asks"]) == dict(sorted(asks.items())[:10])
