"""The chart page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the whole service fed by the emulator. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Page, async_playwright

from livecandle.runtime.service import Service
from tests.builders import flat_kline_member
from tests.e2e.browser import ARGS, CHROMIUM, chart_service
from tests.helpers import EmulatorProcess, Endpoints
from tests.integration.live_support import running_service

pytestmark = pytest.mark.browser


STATE = """() => {
  const lc = window.livecandle;
  if (!lc) return null;
  const bars = lc.view.bars;
  return {
    n: bars.length, updates: lc.view.updates, loads: lc.feed.loads,
    reconnects: lc.feed.reconnects, interval: lc.feed.interval, symbol: lc.feed.symbol,
    status: document.getElementById('status').dataset.state,
    price: document.getElementById('price').textContent,
    last: bars.length ? bars[bars.length - 1] : null,
    times: bars.map(b => b.time),
  };
}"""


@pytest.fixture
async def service(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[Service]:
    async with chart_service(redis_url, emulator, "1s,1m") as svc:
        yield svc


@pytest.fixture
async def page(
    service: Service, artifacts: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = await browser.new_page(viewport={"width": 1280, "height": 720})
        problems: list[str] = []
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: problems.append(str(e)))
        pg.problems = problems  # type: ignore[attr-defined]
        try:
            yield pg
            await pg.screenshot(path=str(artifacts / f"{request.node.name}.png"))
        finally:
            await browser.close()
        assert problems == [], problems  # no console errors


INTERVAL = '[data-pane="0"] select.interval'


async def choose_symbol(page: Page, symbol: str) -> None:
    """Through the search box, as a user does: type, Enter."""
    await page.fill("#search", symbol.lower())
    await page.press("#search", "Enter")


async def state(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = await page.evaluate(STATE)
    return value


async def open_chart(
    page: Page, service: Service, symbol: str = "BTCUSDT", interval: str = "1s"
) -> dict[str, Any]:
    await page.goto(f"{service.web_url}/?symbol={symbol}&interval={interval}")
    await page.wait_for_function(
        "() => window.livecandle && window.livecandle.view.bars.length > 50 && "
        "document.getElementById('status').dataset.state === 'live'",
        timeout=20_000,
    )
    return await state(page)


async def test_page_loads_history_and_the_forming_candle_moves(
    page: Page, service: Service
) -> None:
    s = await open_chart(page, service)
    assert s["n"] > 250
    assert s["times"] == sorted(set(s["times"]))  # ascending, unique
    before = s["updates"]
    await page.wait_for_function(
        f"() => window.livecandle.view.updates >= {before + 10}", timeout=15_000
    )
    s = await state(page)
    assert s["last"]["state"] == "forming"
    assert s["price"] not in ("", "\u2013")  # the placeholder is an en dash


async def test_seed_cases_1_2_3_through_the_page(
    page: Page, service: Service, redis: aioredis.Redis
) -> None:
    s = await open_chart(page, service)
    # Test case 1: a live price updates the forming candle (shown, and equal to Redis)
    forming_time = s["last"]["time"]
    await page.wait_for_function(
        "() => { const b = window.livecandle.view.bars.at(-1);"
        " return b.state === 'forming' && window.livecandle.feed.builder.lastTradeMs > 0; }",
        timeout=10_000,
    )
    # Test case 3: the first trade of the next period starts a new live candle
    await page.wait_for_function(
        f"() => window.livecandle.view.bars.at(-1).time > {forming_time}", timeout=10_000
    )
    # Test case 2: the fetcher stores the official candle; the chart refreshes by itself
    await page.wait_for_function(
        f"() => {{ const b = window.livecandle.view.bars.find(x => x.time === {forming_time});"
        " return b && b.state === 'official'; }",
        timeout=15_000,
    )
    bar = await page.evaluate(
        f"() => window.livecandle.view.bars.find(x => x.time === {forming_time})"
    )
    member = await redis.zrangebyscore("klines_z:BTCUSDT:1s", forming_time, forming_time)
    assert len(member) == 1
    import json

    official = json.loads(member[0])
    assert [bar["open"], bar["high"], bar["low"], bar["close"]] == official[1:5]
    s = await state(page)
    assert s["times"] == sorted(set(s["times"]))


async def test_switching_interval_and_symbol(page: Page, service: Service) -> None:
    await open_chart(page, service)
    await page.select_option(INTERVAL, "1m")
    await page.wait_for_function(
        "() => window.livecandle.feed.interval === '1m' && window.livecandle.view.bars.length"
        " > 50 && window.livecandle.view.bars.every((b, i, a) => i === 0 ||"
        " (b.time - a[i-1].time) % 60000 === 0)",
        timeout=15_000,
    )
    await choose_symbol(page, "ETHUSDT")
    await page.wait_for_function(
        "() => window.livecandle.feed.symbol === 'ETHUSDT' && window.livecandle.feed.loads >= 3"
        " && window.livecandle.view.bars.length > 50",
        timeout=15_000,
    )
    s = await state(page)
    assert "symbol=ETHUSDT&interval=1m" in page.url
    assert float(s["last"]["close"]) < 20_000  # ETH's price range in the emulator


async def test_a_forced_socket_reconnect_resyncs(page: Page, service: Service) -> None:
    s = await open_chart(page, service)
    loads = s["loads"]
    await page.evaluate("() => window.livecandle.feed.socket.io.engine.close()")
    await page.wait_for_function(
        f"() => window.livecandle.feed.loads > {loads} && "
        "document.getElementById('status').dataset.state === 'live'",
        timeout=20_000,
    )
    after = (await state(page))["updates"]
    await page.wait_for_function(
        f"() => window.livecandle.view.updates > {after + 3}", timeout=10_000
    )
    s = await state(page)
    assert s["reconnects"] >= 1
    assert s["times"] == sorted(set(s["times"]))  # no duplicate or out-of-order bars


async def test_an_unreachable_exchange_is_said_once_and_cached_data_is_served(
    redis_url: str, redis: aioredis.Redis, artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import msgspec

    from livecandle.domain.model import SeriesKey
    from livecandle.runtime.redis_server import free_port
    from livecandle.store import Store

    t0 = 1_700_000_040_000
    rows = [
        (
            t0 + i * 60_000,
            msgspec.json.encode(
                [
                    t0 + i * 60_000,
                    "100.00000000",
                    "101.00000000",
                    "99.00000000",
                    "100.50000000",
                    "1.00000000",
                    t0 + i * 60_000 + 59_999,
                    "100.00000000",
                    5,
                    "0.50000000",
                    "50.00000000",
                    "0",
                ]
            ),
        )
        for i in range(120)
    ]
    await Store(redis).write_candles(SeriesKey.of("BTCUSDT", "1m"), rows, 1)
    port = free_port()  # nobody listens there
    dead = Endpoints(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    caplog.set_level(logging.INFO)
    async with (
        running_service(
            redis_url, dead, "1m", roles=("fetcher", "stream", "web"), port=0, wait_exchange=False
        ) as svc,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = await browser.new_page(viewport={"width": 1280, "height": 720})
            await pg.goto(f"{svc.web_url}/?symbol=BTCUSDT&interval=1m")
            await pg.wait_for_function(
                "() => window.livecandle && window.livecandle.view.bars.length === 120",
                timeout=15_000,
            )
            await pg.wait_for_selector("#banner:not([hidden])", timeout=30_000)
            text = await pg.text_content("#banner")
            assert text is not None and "Exchange unreachable" in text
            # the socket is up but nothing is live: the pill must not say "live"
            await pg.wait_for_function(
                "() => document.getElementById('status').dataset.state === 'stale'", timeout=10_000
            )
            pill = await pg.text_content("#status")
            assert pill is not None and "exchange offline" in pill
            await pg.screenshot(path=str(artifacts / "exchange_unreachable.png"))
        finally:
            await browser.close()
        problem = svc.exchange_problem
        assert problem is not None and f"127.0.0.1:{port}" in problem
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and "cannot reach the exchange" in r.getMessage()
    ]
    assert len(errors) == 1  # said once, not once per retry


async def test_closed_candle_gets_final_values_and_a_switch_never_mixes_pairs(
    redis_url: str, redis: aioredis.Redis, artifacts: Path
) -> None:
    """With no exchange, only the events this test injects reach the page."""
    from livecandle.domain.model import SeriesKey
    from livecandle.runtime.redis_server import free_port
    from livecandle.store import Store

    t0 = 1_700_000_040_000
    store = Store(redis)
    for symbol, price in (("BTCUSDT", "100.00000000"), ("ETHUSDT", "3000.00000000")):
        rows = [(t0 + i * 60_000, flat_kline_member(t0 + i * 60_000, price)) for i in range(30)]
        await store.write_candles(SeriesKey.of(symbol, "1m"), rows, 1)
    port = free_port()  # nobody listens there
    dead = Endpoints(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    async with (
        running_service(redis_url, dead, "1m", roles=("web",), port=0) as svc,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = await browser.new_page(viewport={"width": 1280, "height": 720})
            problems: list[str] = []
            pg.on("pageerror", lambda e: problems.append(str(e)))
            await pg.goto(f"{svc.web_url}/?symbol=BTCUSDT&interval=1m")
            await pg.wait_for_function(
                "() => window.livecandle && window.livecandle.view.bars.length === 30"
            )
            t1, t2 = t0 + 30 * 60_000, t0 + 31 * 60_000
            # a tick starts T1, a tick of T2 closes it, then the server's exact final T1
            bar = await pg.evaluate(
                f"""() => {{
                const f = window.livecandle.feed;
                f.livePrice({{symbol: "BTCUSDT", price: "100.10", time: {t1 + 5_000}}});
                f.livePrice({{symbol: "BTCUSDT", price: "100.20", time: {t2 + 1_000}}});
                const c = (t, o, h, l, cl, v) => ({{time: t, open: o, high: h, low: l,
                    close: cl, volume: v}});
                f.liveCandle({{symbol: "BTCUSDT", interval: "1m",
                    candle: c({t2}, "100.20", "100.20", "100.20", "100.20", "0.1"),
                    previous: c({t1}, "100.10", "103.00", "98.00", "99.00", "7.5")}});
                const v = window.livecandle.view;
                return {{bar: v.bars.find(b => b.time === {t1}),
                         drawn: v.candles.data().find(b => b.time === {t1} / 1000),
                         times: v.bars.map(b => b.time)}};
            }}"""
            )
            assert bar["bar"]["high"] == "103.00" and bar["bar"]["close"] == "99.00", bar
            assert bar["bar"]["volume"] == "7.5" and bar["bar"]["state"] == "unconfirmed"
            assert (bar["drawn"]["high"], bar["drawn"]["low"], bar["drawn"]["close"]) == (
                103,
                98,
                99,
            )
            assert bar["times"] == sorted(set(bar["times"])) and bar["times"][-1] == t2

            # the ETH history load fails once: nothing of BTC stays drawn, no ETH event is
            # drawn on stale bars, and the load is retried until it succeeds
            failed: list[str] = []

            async def fail(route: Any) -> None:
                failed.append(route.request.url)
                await route.abort()

            await pg.route("**/api/klines?symbol=ETHUSDT*", fail, times=1)
            await choose_symbol(pg, "ETHUSDT")
            await pg.wait_for_function(
                "() => document.getElementById('status').dataset.state === 'offline'"
            )
            during = await pg.evaluate(
                f"""() => {{
                const f = window.livecandle.feed;
                f.livePrice({{symbol: "ETHUSDT", price: "3001.00", time: {t2 + 2_000}}});
                return {{n: window.livecandle.view.bars.length,
                         status: document.getElementById('status').textContent}};
            }}"""
            )
            assert failed and during["n"] == 0, during
            assert "retrying" in during["status"]
            await pg.wait_for_function(
                "() => window.livecandle.view.bars.length === 30 && "
                "document.getElementById('status').dataset.state === 'live'",
                timeout=10_000,
            )
            closes = await pg.evaluate("() => window.livecandle.view.bars.map(b => b.close)")
            assert set(closes) == {"3000.00000000"}
            await pg.screenshot(path=str(artifacts / "switch_after_failed_load.png"))
        finally:
            await browser.close()
        assert problems == [], problems
