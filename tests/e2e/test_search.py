"""Finding a symbol among 1,600 (search with last price and 24 h change, favourites kept
in the browser) and the states the page must show honestly, against a web process with
a stored market and no exchange."""

from __future__ import annotations

import itertools
import string
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.domain.model import SeriesKey
from livecandle.runtime.redis_server import free_port
from livecandle.runtime.service import Service
from livecandle.store import Store
from tests.builders import kline_member
from tests.e2e.browser import browser_page
from tests.helpers import Endpoints
from tests.integration.live_support import running_service

pytestmark = pytest.mark.browser
HOUR = 3_600_000
QUOTES = ("USDT", "BTC", "FDUSD", "USDC")


def universe(n: int = 1_600) -> list[str]:
    """``n`` symbol names: the ETH family the test looks for, then generated ones."""
    names = ["BTCUSDT", "ETHUSDT", "ETHBTC", "ETHFDUSD", "SETHUSDT"]
    bases = ("".join(p) for p in itertools.product(string.ascii_uppercase, repeat=3))
    for base, quote in zip(bases, itertools.cycle(QUOTES), strict=False):
        if len(names) == n:
            break
        if "ETH" not in base:
            names.append(f"Q{base}{quote}")
    return names


@pytest.fixture
async def market(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Service]:
    """A web process serving 1,600 symbols (1h candles of the last day stored for a
    few); nobody listens at the exchange's address."""
    now = int(time.time() * 1000)
    first = now - now % HOUR - 23 * HOUR
    store = Store(redis)
    for symbol, start, end in (("ETHUSDT", 3000, 3030), ("ETHBTC", 0.05, 0.049)):
        rows = []
        for i in range(24):
            o = start + (end - start) * i / 24
            c = start + (end - start) * (i + 1) / 24
            rows.append(
                (
                    first + i * HOUR,
                    kline_member(
                        first + i * HOUR,
                        f"{c:.8f}",
                        open=f"{o:.8f}",
                        high=f"{max(o, c):.8f}",
                        low=f"{min(o, c):.8f}",
                        quote_volume="1000.00000000",
                    ),
                )
            )
        await store.write_candles(SeriesKey.of(symbol, "1h"), rows, 1)
    port = free_port()
    dead = Endpoints(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    async with running_service(
        redis_url, dead, "1m,1h", roles=("web",), port=0, symbols=",".join(universe())
    ) as svc:
        yield svc


async def test_the_search_finds_a_symbol_among_1600_and_opens_it(
    market: Service, artifacts: Path
) -> None:
    async with httpx.AsyncClient(base_url=market.web_url or "") as client:
        started = time.monotonic()
        body = (await client.get("/api/tickers")).json()
        took_s = time.monotonic() - started
    assert len(body["tickers"]) == 1_600 and body["interval"] == "1h"
    eth = next(t for t in body["tickers"] if t["symbol"] == "ETHUSDT")
    assert (eth["last"], eth["change_pct"], eth["quote_volume"]) == ("3030", "1.00", "24000")
    assert took_s < 2.0, took_s

    async with browser_page(artifacts, "search_among_1600") as page:
        await page.goto(f"{market.web_url}/?symbol=BTCUSDT&interval=1h")
        await page.wait_for_function("() => window.livecandle && window.livecandle.feed.loads >= 1")
        await page.click("#search")
        await page.keyboard.type("eth")
        await page.wait_for_function(
            "() => document.querySelector('#search-list li[data-symbol=\"ETHUSDT\"] .num.up')"
        )
        shown = await page.evaluate(
            "() => [...document.querySelectorAll('#search-list li')].map(l => l.dataset.symbol)"
        )
        assert shown == ["ETHBTC", "ETHUSDT", "ETHFDUSD", "SETHUSDT"]  # prefix first, short first
        row = await page.text_content('#search-list li[data-symbol="ETHUSDT"]')
        assert row is not None and "3030.00" in row and "+1.00%" in row
        await page.screenshot(path=str(artifacts / "search_list.png"))
        await page.keyboard.press("ArrowDown")
        await page.keyboard.press("Enter")
        await page.wait_for_function("() => window.livecandle.feed.symbol === 'ETHUSDT'")
        assert "symbol=ETHUSDT&interval=1h" in page.url
        assert await page.text_content('[data-pane="0"] .pick') == "ETHUSDT"

        # a favourite comes first, and stays after a reload
        await page.click("#search")
        await page.keyboard.type("qab")
        await page.wait_for_selector("#search-list li[data-symbol]")
        fav = await page.get_attribute("#search-list li[data-symbol]", "data-symbol")
        assert fav is not None and fav.startswith("QAB")
        await page.click(f'#search-list [data-star="{fav}"]')
        await page.keyboard.press("Escape")
        await page.reload()
        await page.wait_for_function("() => window.livecandle && window.livecandle.feed.loads >= 1")
        await page.click("#search")
        first = await page.get_attribute("#search-list li[data-symbol]", "data-symbol")
        assert first == fav

        # the overview filters by quote asset
        await page.keyboard.press("Escape")
        await page.click('[data-view="overview"]')
        await page.click('[data-quote="BTC"]')
        symbols = await page.evaluate(
            "() => [...document.querySelectorAll('.ov-table tbody tr')].map(r => r.dataset.symbol)"
        )
        assert len(symbols) > 300 and all(s.endswith("BTC") for s in symbols)
        assert symbols[0] == "ETHBTC"  # the only one with a 24 h volume, by volume first


async def test_the_search_opened_again_right_after_a_pick_stays_open(
    market: Service, artifacts: Path
) -> None:
    async with browser_page(artifacts, "search_reopened") as page:
        await page.goto(f"{market.web_url}/?symbol=BTCUSDT&interval=1h")
        await page.wait_for_function("() => window.livecandle && window.livecandle.feed.loads >= 1")
        await page.click("#search")
        await page.keyboard.type("ethusdt")
        await page.wait_for_selector('#search-list li[data-symbol="ETHUSDT"]')
        await page.keyboard.press("Enter")  # picked: the input loses focus, the list closes
        # the search at once again (before the blur's delayed close), then past that delay:
        # the list shows what was typed
        hidden = await page.evaluate(
            """async () => {
                const input = document.querySelector("#search");
                input.focus();
                input.value = "qab";
                input.dispatchEvent(new Event("input"));
                await new Promise((done) => setTimeout(done, 400));
                return document.querySelector("#search-list").hidden;
            }"""
        )
        assert hidden is False
        assert await page.get_attribute("#search-list li[data-symbol]", "data-symbol") == "QABDBTC"


async def test_honest_states(market: Service, artifacts: Path) -> None:
    async def halted(route: Any) -> None:
        await route.fulfill(
            json={"symbols": [{"symbol": "ETHBTC", "status": "HALT", "filters": []}]}
        )

    async with browser_page(artifacts, "honest_states") as page:
        await page.route("**/api/v3/exchangeInfo?symbol=ETHBTC", halted)
        await page.goto(f"{market.web_url}/?symbol=ETHUSDT&interval=1h")
        await page.wait_for_function(
            "() => window.livecandle && window.livecandle.view.bars.length === 24"
        )
        # tick size 0.01 (the service's default): prices with two decimals
        legend = await page.text_content('[data-pane="0"] .legend')
        assert legend is not None and "C 3030.00 " in legend
        # a forming candle that lost trades to a gap says so
        t = await page.evaluate("() => window.livecandle.view.bars.at(-1).time + 3600000")
        await page.evaluate(
            f"""() => window.livecandle.feed.liveCandle({{symbol: "ETHUSDT", interval: "1h",
                candle: {{time: {t}, open: "3030.00", high: "3031.00", low: "3029.00",
                          close: "3030.50", volume: "2", complete: false}}, previous: null}})"""
        )
        await page.wait_for_selector('[data-pane="0"] .legend .incomplete')
        # a halted symbol is said on its chart
        await page.goto(f"{market.web_url}/?symbol=ETHBTC&interval=1h")
        await page.wait_for_selector('[data-pane="0"] .symstate:not([hidden])')
        assert await page.text_content('[data-pane="0"] .symstate') == "trading halted"
