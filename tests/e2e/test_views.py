"""Several charts, the URL as the view, reading the chart and the market overview, in
headless Chromium against the service fed by the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livecandle.runtime.service import Service
from tests.e2e.browser import browser_page, chart_service, wait_panes_live
from tests.helpers import EmulatorProcess

pytestmark = pytest.mark.browser

FOUR = "layout=4&charts=BTCUSDT:1m,ETHUSDT:1m,BTCUSDT:1s,ETHUSDT:1s"
CHARTS = "() => window.livecandle.layout.charts().map(c => `${c.symbol}:${c.interval}`)"


@pytest.fixture
async def service(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[Service]:
    async with chart_service(redis_url, emulator, "1s,1m,1h") as svc:
        yield svc


async def test_a_4_chart_layout_survives_a_reconnect_and_the_url_round_trips(
    service: Service, artifacts: Path
) -> None:
    async with browser_page(artifacts, "layout_4_after_reconnect") as page:
        await page.goto(f"{service.web_url}/?{FOUR}")
        await wait_panes_live(page, 4)
        assert await page.evaluate(CHARTS) == [
            "BTCUSDT:1m",
            "ETHUSDT:1m",
            "BTCUSDT:1s",
            "ETHUSDT:1s",
        ]
        # each pane has its own room: a 1s pane moves while the others keep their interval
        rooms = await page.evaluate("() => [...window.livecandle.conn.rooms.keys()].sort()")
        assert rooms == ["BTCUSDT:1m", "BTCUSDT:1s", "ETHUSDT:1m", "ETHUSDT:1s"]
        loads = await page.evaluate("() => window.livecandle.layout.panes.map(p => p.feed.loads)")
        await page.evaluate("() => window.livecandle.conn.socket.io.engine.close()")
        await page.wait_for_function(
            f"""() => {{ const ps = window.livecandle.layout.panes; const before = {loads};
                return window.livecandle.conn.reconnects >= 1 &&
                  ps.every((p, i) => p.feed.loads > before[i]) &&
                  document.getElementById('status').dataset.state === 'live'; }}""",
            timeout=20_000,
        )
        updates = await page.evaluate(
            "() => window.livecandle.layout.panes.map(p => p.view.updates)"
        )
        await page.wait_for_function(
            f"""() => window.livecandle.layout.panes.every(
                (p, i) => p.view.updates > {updates}[i] + 2)""",
            timeout=15_000,
        )
        for i in range(4):
            times = await page.evaluate(
                f"() => window.livecandle.layout.panes[{i}].view.bars.map(b => b.time)"
            )
            assert times == sorted(set(times))  # no duplicate or out-of-order bar

        # crosshairs in sync between the panes of the same symbol only
        box = await page.locator('[data-pane="0"] .chart').bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
        await page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
        assert await page.evaluate("() => window.livecandle.layout.synced") >= 1

        # the URL is the view: reload, then a layout change, back and forward
        await page.reload()
        await wait_panes_live(page, 4)
        assert (await page.evaluate(CHARTS))[2] == "BTCUSDT:1s"
        await page.click('[data-layout="1"]')
        await page.wait_for_function("() => window.livecandle.layout.panes.length === 1")
        assert page.url.endswith("?symbol=BTCUSDT&interval=1m")
        await page.go_back()
        await wait_panes_live(page, 4)
        assert FOUR in page.url
        assert len(await page.evaluate(CHARTS)) == 4
        await page.go_forward()
        await page.wait_for_function("() => window.livecandle.layout.panes.length === 1")
        assert await page.evaluate(CHARTS) == ["BTCUSDT:1m"]


async def test_reading_the_chart(service: Service, artifacts: Path) -> None:
    async with browser_page(artifacts, "reading_the_chart") as page:
        await page.goto(f"{service.web_url}/?symbol=BTCUSDT&interval=1s")
        await wait_panes_live(page, 1)
        # interval hotkey, on the active pane, into the URL
        await page.keyboard.press("1")
        await page.wait_for_function(
            "() => window.livecandle.feed.interval === '1m' &&"
            " window.livecandle.view.bars.length > 50"
        )
        assert page.url.endswith("interval=1m")
        # prices by tick size (0.01 in the emulator): two decimals in the legend
        legend = await page.text_content('[data-pane="0"] .legend')
        assert legend is not None and " O " in legend and " V " in legend
        # SMA 20 computed exactly from the candles
        await page.click('[data-pane="0"] .overlays summary')
        await page.check('[data-pane="0"] [data-overlay="sma"]')
        await page.check('[data-pane="0"] [data-overlay="vwap"]')
        got = await page.evaluate(
            """() => { const v = window.livecandle.view; const i = v.bars.length - 2;
                return {sma: v.overlays.sma.values[i],
                        closes: v.bars.slice(i - 19, i + 1).map(b => b.close)}; }"""
        )
        expected = sum(Decimal(c) for c in got["closes"]) / 20
        assert abs(Decimal(str(got["sma"])) - expected) < Decimal("1e-6")
        assert "SMA 20" in (await page.text_content('[data-pane="0"] .legend') or "")
        # Heikin-Ashi: the drawn candle is the HA one, the bars stay the exchange's
        ha = await page.evaluate(
            """() => { const v = window.livecandle.view; v.setHeikinAshi(true);
                const i = v.bars.length - 2, b = v.bars[i];
                const drawn = v.candles.data()[i];
                return {drawn: drawn.close, o: b.open, h: b.high, l: b.low, c: b.close}; }"""
        )
        four = (Decimal(ha["o"]) + Decimal(ha["h"]) + Decimal(ha["l"]) + Decimal(ha["c"])) / 4
        assert abs(Decimal(str(ha["drawn"])) - four) < Decimal("1e-6")
        # UTC or local, remembered
        assert await page.text_content("#utc") == "UTC"
        await page.click("#utc")
        await page.reload()
        await wait_panes_live(page, 1)
        assert await page.text_content("#utc") == "Local"


async def test_light_theme_and_a_phone(service: Service, artifacts: Path) -> None:
    async with browser_page(
        artifacts,
        "phone_light_4_charts",
        viewport={"width": 390, "height": 844},
        color_scheme="light",
        is_mobile=True,
        has_touch=True,
    ) as page:
        await page.goto(f"{service.web_url}/?{FOUR}")
        await wait_panes_live(page, 4)
        bg = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(255, 255, 255)"
        widths = await page.evaluate(
            "() => [...document.querySelectorAll('.pane')]"
            ".map(p => p.getBoundingClientRect().width)"
        )
        assert all(w > 350 for w in widths)  # stacked, full width


async def test_the_overview_sorts_and_updates_live(service: Service, artifacts: Path) -> None:
    async with browser_page(artifacts, "market_overview") as page:
        await page.goto(f"{service.web_url}/?view=overview")
        await page.wait_for_function(
            "() => document.querySelectorAll('.ov-table tbody tr').length === 2 &&"
            " [...document.querySelectorAll('.ov-table tbody td.num')]"
            ".every(td => td.textContent !== '\\u2013')",  # the placeholder: an en dash
            timeout=15_000,
        )
        order = (
            "() => [...document.querySelectorAll('.ov-table tbody tr')].map(r => r.dataset.symbol)"
        )
        await page.click('th[data-sort="last"]')
        assert await page.evaluate(order) == ["BTCUSDT", "ETHUSDT"]  # highest price first
        await page.click('th[data-sort="last"]')
        assert await page.evaluate(order) == ["ETHUSDT", "BTCUSDT"]
        await page.click('th[data-sort="symbol"]')
        assert await page.evaluate(order) == ["BTCUSDT", "ETHUSDT"]
        # live: the last prices change without a reload
        first = await page.text_content('tr[data-symbol="BTCUSDT"] td:nth-child(3)')
        await page.wait_for_function(
            f"""() => document.querySelector('tr[data-symbol="BTCUSDT"] td:nth-child(3)')
                .textContent !== {first!r}""",
            timeout=15_000,
        )
        await page.click('[data-quote="USDT"]')
        assert await page.evaluate(order) == ["BTCUSDT", "ETHUSDT"]
        # one click to the chart
        await page.click('tr[data-symbol="ETHUSDT"]')
        await page.wait_for_function(
            "() => window.livecandle.feed.symbol === 'ETHUSDT' &&"
            " window.livecandle.view.bars.length > 50"
        )
        assert "view=overview" not in page.url and "symbol=ETHUSDT" in page.url
        await page.go_back()
        await page.wait_for_selector("#overview:not([hidden])")
