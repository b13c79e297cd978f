"""The emulator's order books over real HTTP and websockets: Binance's shapes, weights and
update-id sequences, the book consistent with the trades, books made only on demand."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from livecandle.domain.model import format_units, to_units
from tests.helpers import EmulatorProcess


async def messages(url: str, count: int) -> AsyncIterator[dict[str, Any]]:
    async with asyncio.timeout(30), websockets.connect(url) as ws:
        for _ in range(count):
            yield json.loads(await ws.recv())


def top(rows: list[list[str]], n: int) -> list[list[str]]:
    return rows[:n]


async def book_at(emu: EmulatorProcess, symbol: str, update_id: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(
            emu.rest_url + "/_emulator/book", params={"symbol": symbol, "updateId": update_id}
        )
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


async def test_diff_events_are_binances_and_each_follows_the_last_of_its_stream(
    emulator: EmulatorProcess,
) -> None:
    url = emulator.ws_url + "/stream?streams=btcusdt@depth@100ms/btcusdt@depth"
    last: dict[str, int] = {}
    times: dict[str, list[int]] = {"btcusdt@depth@100ms": [], "btcusdt@depth": []}
    async for m in messages(url, 40):
        stream, event = m["stream"], m["data"]
        assert list(event) == ["e", "E", "s", "U", "u", "b", "a"]
        assert event["e"] == "depthUpdate" and event["s"] == "BTCUSDT"
        assert event["U"] <= event["u"]
        if stream in last:
            assert event["U"] == last[stream] + 1, stream
        last[stream] = event["u"]
        times[stream].append(event["E"])
        for price, qty in event["b"] + event["a"]:
            assert format_units(to_units(price)) == price and to_units(qty) >= 0
    fast, slow = times["btcusdt@depth@100ms"], times["btcusdt@depth"]
    assert len(slow) >= 2 and len(fast) > 3 * len(slow)
    assert all(b - a >= 900 for a, b in itertools.pairwise(slow))


async def test_partial_books_and_book_tickers_are_the_top_of_the_book_at_their_id(
    emulator: EmulatorProcess,
) -> None:
    url = (
        emulator.ws_url + "/stream?streams=ethusdt@depth5@100ms/ethusdt@depth10/ethusdt@bookTicker"
    )
    got: dict[str, list[dict[str, Any]]] = {}
    async for m in messages(url, 30):
        got.setdefault(m["stream"], []).append(m["data"])
    assert set(got) == {"ethusdt@depth5@100ms", "ethusdt@depth10", "ethusdt@bookTicker"}
    for stream, n in (("ethusdt@depth5@100ms", 5), ("ethusdt@depth10", 10)):
        partial = got[stream][-1]
        assert list(partial) == ["lastUpdateId", "bids", "asks"]
        book = await book_at(emulator, "ETHUSDT", partial["lastUpdateId"])
        assert partial["bids"] == top(book["bids"], n) and partial["asks"] == top(book["asks"], n)
    ticker = got["ethusdt@bookTicker"][-1]
    assert list(ticker) == ["u", "s", "b", "B", "a", "A"] and ticker["s"] == "ETHUSDT"
    book = await book_at(emulator, "ETHUSDT", ticker["u"])
    assert [ticker["b"], ticker["B"]] == book["bids"][0]
    assert [ticker["a"], ticker["A"]] == book["asks"][0]
    ids = [t["u"] for t in got["ethusdt@bookTicker"]]
    assert ids == sorted(set(ids))


async def test_rest_depth_and_book_ticker_have_binances_shape_and_weights(
    emulator: EmulatorProcess,
) -> None:
    async with httpx.AsyncClient(base_url=emulator.rest_url) as http:

        async def used(path: str, **params: Any) -> tuple[int, Any]:
            r = await http.get(path, params=params)
            assert r.status_code == 200, r.text
            return int(r.headers["x-mbx-used-weight-1m"]), r.json()

        emulator.control(reset_limits=True)
        w0, depth = await used("/api/v3/depth", symbol="BTCUSDT", limit=5)
        assert w0 == 5
        assert list(depth) == ["lastUpdateId", "bids", "asks"]
        bids = [to_units(p) for p, _ in depth["bids"]]
        asks = [to_units(p) for p, _ in depth["asks"]]
        assert len(bids) == len(asks) == 5
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
        w1, default = await used("/api/v3/depth", symbol="BTCUSDT")
        assert w1 - w0 == 5 and len(default["bids"]) == 100
        assert default["lastUpdateId"] >= depth["lastUpdateId"]
        w2, _ = await used("/api/v3/depth", symbol="BTCUSDT", limit=200)
        w3, _ = await used("/api/v3/depth", symbol="BTCUSDT", limit=1000)
        w4, _ = await used("/api/v3/depth", symbol="BTCUSDT", limit=9999)  # cut to 5000
        assert (w2 - w1, w3 - w2, w4 - w3) == (25, 50, 250)
        w5, one = await used("/api/v3/ticker/bookTicker", symbol="ETHUSDT")
        w6, every = await used("/api/v3/ticker/bookTicker")
        w7, some = await used("/api/v3/ticker/bookTicker", symbols='["ETHUSDT","BTCUSDT"]')
        assert (w5 - w4, w6 - w5, w7 - w6) == (2, 4, 4)
        assert list(one) == ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"]
        assert [t["symbol"] for t in every] == ["BTCUSDT", "ETHUSDT"]
        assert [t["symbol"] for t in some] == ["ETHUSDT", "BTCUSDT"]
        for path, params, code in [
            ("/api/v3/depth", {"symbol": "NOPE"}, -1121),
            ("/api/v3/depth", {}, -1102),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "0"}, -1130),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "a"}, -1100),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "symbolStatus": "HALT"}, -1220),
            ("/api/v3/ticker/bookTicker", {"symbols": '["NOPE"]'}, -1121),
        ]:
            r = await http.get(path, params=params)
            assert (r.status_code, r.json()["code"]) == (400, code), (path, params)


async def test_the_spread_straddles_the_last_trade(emulator: EmulatorProcess) -> None:
    async with httpx.AsyncClient(base_url=emulator.rest_url) as http:

        async def last_trade() -> dict[str, Any]:
            r = await http.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "limit": 1})
            trade: dict[str, Any] = r.json()[-1]
            return trade

        checked = 0
        for _ in range(50):
            before = await last_trade()
            r = await http.get("/api/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"})
            ticker = r.json()
            if (await last_trade())["a"] != before["a"]:
                continue  # a trade came in between: no telling which one the book saw
            price = to_units(before["p"])
            assert to_units(ticker["bidPrice"]) < price < to_units(ticker["askPrice"])
            checked += 1
        assert checked >= 5


@pytest.fixture
def market() -> Any:
    with EmulatorProcess("--synthetic", "300", "--history-days", "2", symbols="") as emu:
        yield emu


async def test_books_are_made_only_for_the_symbols_asked_for(market: EmulatorProcess) -> None:
    async with httpx.AsyncClient(base_url=market.rest_url) as http:

        async def books() -> int:
            stats = (await http.get("/_emulator/stats")).json()
            n: int = stats["streams"]["depth"]["books"]
            return n

        every = (await http.get("/api/v3/ticker/bookTicker")).json()
        assert len(every) == 300
        assert all(to_units(t["bidPrice"]) < to_units(t["askPrice"]) for t in every)
        assert await books() == 0  # the best prices of every symbol cost no book
        symbol = every[7]["symbol"]
        depth = (await http.get("/api/v3/depth", params={"symbol": symbol, "limit": 1})).json()
        assert await books() == 1
        assert to_units(depth["bids"][0][0]) < to_units(depth["asks"][0][0])
        async for m in messages(f"{market.ws_url}/ws/{every[3]['symbol'].lower()}@bookTicker", 1):
            assert m["s"] == every[3]["symbol"]
        assert await books() == 2
