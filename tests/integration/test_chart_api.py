"""/api/history and /api/tickers against a real Redis: older pages from the store, else
from a small in-memory exchange behind the ``Status.fetch_older`` protocol; the listing
remembered; the 24 h figures of every symbol exact."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from livecandle.domain.intervals import parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from livecandle.web.errors import ApiError
from livecandle.web.history import History
from livecandle.web.params import Served
from livecandle.web.tickers import Tickers, quote_of
from tests.builders import kline_member

MIN = 60_000
T0 = 1_700_000_040_000  # a minute open
M1 = parse_interval("1m")
BTC = SeriesKey("BTCUSDT", M1)


class Exchange:
    """The part of ``Status`` that History uses: candles listed at ``listing_ms``,
    fetched into the store on demand, each fetch counted."""

    def __init__(self, store: Store, listing_ms: int, available: bool = True) -> None:
        self.store = store
        self.listing_ms = listing_ms
        self.available = available
        self.fetches: list[tuple[int, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch_older(self, series: SeriesKey, end_ms: int, limit: int) -> int | None:
        if not self.available:
            return None
        await self.gate.wait()
        start = max(self.listing_ms, series.interval.shift(end_ms, 1 - limit))
        self.fetches.append((start, end_ms))
        rows = [(t, kline_member(t)) for t in range(start, end_ms + 1, MIN)]
        if rows:
            await self.store.write_candles(series, rows, 1)
        return len(rows)

    def now_ms(self) -> int:
        return T0 + 10_000 * MIN


def history(store: Store, exchange: Any) -> History:
    return History(exchange, store, Served(["BTCUSDT"], [M1]))


async def stored(store: Store, first: int, n: int) -> None:
    await store.write_candles(
        BTC, [(first + i * MIN, kline_member(first + i * MIN)) for i in range(n)], 1
    )


def page(body: bytes) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.json.decode(body)
    return value


async def test_a_stored_page_is_answered_without_the_exchange(store: Store) -> None:
    await stored(store, T0, 100)
    ex = Exchange(store, T0 - 10_000 * MIN)
    body = page(
        await history(store, ex).page(
            {"symbol": "BTCUSDT", "interval": "1m", "end": str(T0 + 99 * MIN), "limit": "50"}
        )
    )
    assert [r[0] for r in body["candles"]] == [T0 + i * MIN for i in range(50, 100)]
    assert body["candles"][0][12] == "official" and len(body["candles"][0]) == 13
    assert body["source"] == "stored" and body["listing"] is None and ex.fetches == []


async def test_beyond_the_store_the_page_is_fetched_stored_and_then_read_from_redis(
    store: Store,
) -> None:
    await stored(store, T0, 10)
    ex = Exchange(store, T0 - 10_000 * MIN)
    h = history(store, ex)
    q = {"symbol": "BTCUSDT", "interval": "1m", "end": str(T0 - MIN), "limit": "1000"}
    body = page(await h.page(q))
    assert body["source"] == "exchange"
    assert [r[0] for r in body["candles"]] == [T0 - (1000 - i) * MIN for i in range(1000)]
    again = page(await h.page(q))
    assert again["source"] == "stored" and again["candles"] == body["candles"]
    assert len(ex.fetches) == 1


async def test_the_listing_ends_the_pages_and_is_remembered(store: Store) -> None:
    listing = T0 - 30 * MIN
    await stored(store, T0, 10)
    ex = Exchange(store, listing)
    h = history(store, ex)
    body = page(await h.page({"symbol": "BTCUSDT", "interval": "1m", "end": str(T0 - MIN)}))
    assert body["listing"] == listing and body["candles"][0][0] == listing
    assert len(body["candles"]) == 30
    before = len(ex.fetches)
    body = page(await h.page({"symbol": "BTCUSDT", "interval": "1m", "end": str(listing - MIN)}))
    assert body["candles"] == [] and body["listing"] == listing
    assert len(ex.fetches) == before  # nothing older exists: the exchange is not asked


async def test_readers_of_the_same_page_share_one_fetch(store: Store) -> None:
    ex = Exchange(store, T0 - 10_000 * MIN)
    ex.gate.clear()
    h = history(store, ex)
    q = {"symbol": "BTCUSDT", "interval": "1m", "end": str(T0), "limit": "100"}
    readers = [asyncio.create_task(h.page(q)) for _ in range(5)]
    await asyncio.sleep(0.05)
    ex.gate.set()
    bodies = await asyncio.gather(*readers)
    assert len(ex.fetches) == 1
    assert all(page(b)["candles"] == page(bodies[0])["candles"] for b in bodies)


async def test_without_a_fetcher_the_page_says_unavailable(store: Store) -> None:
    await stored(store, T0, 10)
    body = page(
        await history(store, Exchange(store, 0, available=False)).page(
            {"symbol": "BTCUSDT", "interval": "1m", "end": str(T0 + 9 * MIN), "limit": "20"}
        )
    )
    assert body["source"] == "unavailable" and len(body["candles"]) == 10


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"symbol": "BTCUSDT", "interval": "1m"}, "end"),
        ({"symbol": "BTCUSDT", "interval": "1m", "end": "x"}, "end"),
        ({"symbol": "BTCUSDT", "interval": "1m", "end": str(T0 + 1)}, "end"),
        ({"symbol": "BTCUSDT", "interval": "1m", "end": str(T0), "limit": "1001"}, "limit"),
        ({"symbol": "NOPE", "interval": "1m", "end": str(T0)}, "symbol"),
    ],
)
async def test_a_bad_history_query_is_a_400_naming_the_field(
    store: Store, query: dict[str, str], field: str
) -> None:
    with pytest.raises(ApiError) as e:
        await history(store, Exchange(store, 0)).page(query)
    assert e.value.status == 400 and e.value.field == field


async def test_tickers_of_every_symbol_from_hour_candles_and_live_prices(store: Store) -> None:
    h1 = parse_interval("1h")
    now = T0 - T0 % 3_600_000 + 30 * MIN
    first = now - now % 3_600_000 - 23 * 3_600_000
    rows = [
        (
            first + i * 3_600_000,
            kline_member(
                first + i * 3_600_000,
                "110.00000000",
                open="100.00000000" if i == 0 else "105.00000000",
                quote_volume="0.10000000",
            ),
        )
        for i in range(24)  # the first opens 23 h ago: the window's first hour
    ]
    await store.write_candles(SeriesKey("BTCUSDT", h1), rows, 1)
    await store.redis.set(store.keys.live_price("ETHBTC"), b'{"price":"0.05000000","time":1}')
    names = ["BTCUSDT", "ETHBTC"] + [f"X{i}FDUSD" for i in range(1_598)]
    t = Tickers(store, lambda: names, [M1, h1], lambda: now)
    body = await t.compute()
    assert body["interval"] == "1h" and len(body["tickers"]) == 1_600
    btc, eth = body["tickers"][0], body["tickers"][1]
    assert btc == {
        "symbol": "BTCUSDT",
        "quote": "USDT",
        "last": "110",
        "open": "100",
        "change": "10",
        "change_pct": "10.00",
        "quote_volume": "2.4",
    }
    assert eth["last"] == "0.05" and eth["change"] is None and eth["quote"] == "BTC"
    assert body["tickers"][2]["quote"] == "FDUSD" and body["tickers"][2]["last"] is None
    assert quote_of("ETHUSDC") == "USDC" and quote_of("XYZ") == "other"


async def test_an_exchange_failure_answers_the_stored_part_and_why(store: Store) -> None:
    await stored(store, T0, 10)
    ex = Exchange(store, 0)

    async def broken(series: SeriesKey, end_ms: int, limit: int) -> int | None:
        raise ConnectionError("connection refused")

    ex.fetch_older = broken  # type: ignore[method-assign]
    body = page(
        await history(store, ex).page(
            {"symbol": "BTCUSDT", "interval": "1m", "end": str(T0 + 9 * MIN), "limit": "20"}
        )
    )
    assert body["source"] == "error" and "connection refused" in body["error"]
    assert len(body["candles"]) == 10 and body["listing"] is None
