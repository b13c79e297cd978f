"""The emulator as a whole-market test bed: a skewed synthetic universe, Binance's full
exchangeInfo, and listings, status changes and delistings at run time."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.builders import reference_kline
from tests.helpers import EmulatorProcess

MIN = 60_000


@pytest.fixture(scope="module")
def market() -> Iterator[EmulatorProcess]:
    """BTCUSDT and 199 synthetic symbols, 400 trades/s across them."""
    args = ("--synthetic", "199", "--total-rate", "400", "--history-days", "40", "--seed", "3")
    with EmulatorProcess(*args, symbols="BTCUSDT") as emu:
        yield emu


def get(emu: EmulatorProcess, path: str, **params: object) -> httpx.Response:
    return httpx.get(emu.rest_url + path, params=params, timeout=30)  # type: ignore[arg-type]


def wait_for(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_few_symbols_carry_most_trades_and_some_stay_idle(market: EmulatorProcess) -> None:
    time.sleep(3.0)  # about 1,200 trades
    symbols = market.state()["symbols"]
    assert len(symbols) == 200 and next(iter(symbols)) == "BTCUSDT"
    assert all(re.fullmatch(r"[A-Z0-9]{5,20}", s) for s in symbols)
    counts = sorted((x["live_trades"] for x in symbols.values()), reverse=True)
    total = sum(counts)
    assert total > 500
    assert sum(counts[:20]) > 0.5 * total  # the top 10% carry most trades
    assert counts.count(0) >= 20  # a long tail has not traded yet
    rates = sorted((x["rate_per_s"] for x in symbols.values()), reverse=True)
    assert sum(rates) == pytest.approx(400.0)
    assert rates[-1] < 1 / 60 < rates[0] / 1000  # some trade less than once a minute


def test_exchange_info_has_every_symbol_in_binance_shape(market: EmulatorProcess) -> None:
    info = get(market, "/api/v3/exchangeInfo").json()
    assert len(info["symbols"]) == 200
    kinds = {r["rateLimitType"] for r in info["rateLimits"]}
    assert kinds == {"REQUEST_WEIGHT", "ORDERS", "RAW_REQUESTS"}
    s = info["symbols"][0]
    assert (s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) == (
        "BTCUSDT",
        "TRADING",
        "BTC",
        "USDT",
    )
    assert s["permissionSets"] == [["SPOT"]] and s["isSpotTradingAllowed"] is True
    filters = {f["filterType"]: f for f in s["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert "NOTIONAL" in filters
    for x in info["symbols"]:
        assert x["symbol"] == x["baseAsset"] + x["quoteAsset"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT"}, -1121),
        ({"symbols": '["BTCUSDT","NOPEUSDT"]'}, -1121),
        ({"symbols": '["BTCUSDT","BTCUSDT"]'}, -1151),
        ({"symbols": "BTCUSDT"}, -1100),
        ({"symbolStatus": "SLEEPING"}, -1122),
        ({"symbol": "BTCUSDT", "symbolStatus": "TRADING"}, -1128),
        ({"foo": "1"}, -1104),
    ],
)
def test_exchange_info_parameters_get_binance_errors(
    market: EmulatorProcess, params: dict[str, str], code: int
) -> None:
    r = get(market, "/api/v3/exchangeInfo", **params)
    assert r.status_code == 400 and r.json()["code"] == code


def test_exchange_info_selects_by_symbol_symbols_and_status(market: EmulatorProcess) -> None:
    one = get(market, "/api/v3/exchangeInfo", symbol="BTCUSDT").json()["symbols"]
    assert [s["symbol"] for s in one] == ["BTCUSDT"]
    names = list(market.state()["symbols"])[5:8]
    some = get(market, "/api/v3/exchangeInfo", symbols=json.dumps(names)).json()["symbols"]
    assert [s["symbol"] for s in some] == names
    trading = get(market, "/api/v3/exchangeInfo", symbolStatus="TRADING").json()["symbols"]
    assert len(trading) == len(market.state()["symbols"])


def test_a_listing_appears_trades_and_its_klines_start_at_the_listing(
    market: EmulatorProcess,
) -> None:
    before = get(market, "/api/v3/exchangeInfo", symbol="NEWUSDT")
    assert before.json()["code"] == -1121
    state = market.control(list={"symbol": "NEWUSDT", "rank": 1})
    listed_ms = state["symbols"]["NEWUSDT"]["listing_ms"]
    assert abs(listed_ms - state["now_ms"]) < 1000
    [info] = get(market, "/api/v3/exchangeInfo", symbol="NEWUSDT").json()["symbols"]
    assert info["status"] == "TRADING"
    wait_for(
        lambda: (
            (st := market.state())["symbols"]["NEWUSDT"]["live_trades"] >= 5
            and st["now_ms"] > listed_ms + 3000
        )
    )
    rows = get(market, "/api/v3/klines", symbol="NEWUSDT", interval="1m", startTime=0).json()
    assert rows[0][0] == listed_ms // MIN * MIN  # the first kline is the listing's
    now = market.state()["now_ms"]  # every trade up to now is in the answer below
    trades = get(market, "/api/v3/aggTrades", symbol="NEWUSDT", fromId=0, limit=1000).json()
    assert trades[0]["a"] == 0 and trades[0]["T"] >= listed_ms
    seconds = get(
        market, "/api/v3/klines", symbol="NEWUSDT", interval="1s", startTime=0, endTime=now - 1000
    ).json()
    assert seconds[0][0] == listed_ms // 1000 * 1000
    traded = [r for r in seconds if r[8] > 0 and r[6] < now]
    assert traded
    for row in traded[:3]:  # closed seconds: exactly the aggregate of their trades
        inside = [t for t in trades if row[0] <= t["T"] <= row[6]]
        assert row == reference_kline(inside, row[0], row[6])


def test_a_break_stops_trades_and_shows_in_exchange_info(market: EmulatorProcess) -> None:
    market.control(status={"symbol": "BTCUSDT", "status": "BREAK"})
    [info] = get(market, "/api/v3/exchangeInfo", symbol="BTCUSDT").json()["symbols"]
    assert info["status"] == "BREAK"
    broken = get(market, "/api/v3/exchangeInfo", symbolStatus="BREAK").json()["symbols"]
    assert [s["symbol"] for s in broken] == ["BTCUSDT"]
    last = market.state()["symbols"]["BTCUSDT"]["last_agg_id"]
    time.sleep(1.5)  # BTCUSDT trades ~30/s when trading
    assert market.state()["symbols"]["BTCUSDT"]["last_agg_id"] == last
    market.control(status={"symbol": "BTCUSDT", "status": "TRADING"})
    wait_for(lambda: market.state()["symbols"]["BTCUSDT"]["last_agg_id"] > last)


def test_a_delisted_symbol_answers_invalid_symbol(market: EmulatorProcess) -> None:
    victim = list(market.state()["symbols"])[10]
    market.control(delist=victim)
    r = get(market, "/api/v3/klines", symbol=victim, interval="1m")
    assert r.status_code == 400 and r.json()["code"] == -1121
    names = [s["symbol"] for s in get(market, "/api/v3/exchangeInfo").json()["symbols"]]
    assert victim not in names and len(names) == len(market.state()["symbols"])


def test_the_total_rate_changes_at_run_time(market: EmulatorProcess) -> None:
    market.control(total_rate=0)
    before = market.state()["trades_total"]
    time.sleep(1.0)
    assert market.state()["trades_total"] == before
    market.control(total_rate=400)
    wait_for(lambda: market.state()["trades_total"] > before + 50)


async def test_an_idle_series_gets_a_final_kline_at_every_close(market: EmulatorProcess) -> None:
    """A halted symbol (no trades) still closes its candles; no update in between."""
    symbol = list(market.state()["symbols"])[20]
    market.control(status={"symbol": symbol, "status": "HALT"})
    await asyncio.sleep(1.2)  # the second it halted in may hold trades from before
    try:
        async with websockets.connect(f"{market.ws_url}/ws/{symbol.lower()}@kline_1s") as ws:
            events = []
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                except TimeoutError:
                    break
                events.append(json.loads(raw)["k"])
    finally:
        market.control(status={"symbol": symbol, "status": "TRADING"})
    assert len(events) >= 2
    assert all(k["x"] and k["n"] == 0 and k["f"] == -1 for k in events)
    assert all(b["t"] == a["t"] + 1000 for a, b in itertools.pairwise(events))
