"""History without end: panning left pages older candles in, from Redis and beyond it
from the exchange (stored on the way), with no duplicate, gap or jump; the listing ends
the scrolling; a web process without a fetcher says it has no older history."""

from __future__ import annotations

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
from tests.builders import flat_kline_member
from tests.e2e.browser import browser_page, chart_service, wait_panes_live
from tests.helpers import EmulatorProcess, Endpoints
from tests.integration.live_support import running_service

pytestmark = pytest.mark.browser
MIN = 60_000


@pytest.fixture
async def service(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[Service]:
    async with chart_service(redis_url, emulator, "1m,1d") as svc:
        yield svc


async def emulator_klines(emu: EmulatorProcess, first: int, last: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    async with httpx.AsyncClient(base_url=emu.rest_url) as client:
        start = first
        while start <= last:
            r = await client.get(
                "/api/v3/klines",
                params={
                    "symbol": "BTCUSDT",
                    "interval": "1m",
                    "startTime": start,
                    "endTime": last,
                    "limit": 1000,
                },
            )
            r.raise_for_status()
            page = r.json()
            rows.extend(page)
            start = page[-1][0] + MIN
    return rows


SCROLL_LEFT = """async () => {
  const p = window.livecandle.layout.panes[0];
  const ts = p.view.chart.timeScale();
  ts.setVisibleLogicalRange({from: 5, to: 85});  // applied at the next frame
  const before = p.view.bars[5].time;
  const pages = p.feed.olderPages;
  const seen = [];
  const older = p.root.querySelector('.older');
  const watch = new MutationObserver(
    () => seen.push([older.dataset.state, older.hidden, older.textContent]));
  watch.observe(older, {attributes: true, childList: true});
  const t0 = performance.now();
  while (p.feed.olderPages === pages && performance.now() - t0 < 15000) {
    await new Promise(r => setTimeout(r, 20));
  }
  await new Promise(r => requestAnimationFrame(r));
  const after = p.view.bars[Math.round(ts.getVisibleLogicalRange().from)].time;
  watch.disconnect();
  return {before, after, n: p.view.bars.length,
          state: older.dataset.state, seen};
}"""


async def test_scrolling_back_5000_candles_has_no_duplicate_or_gap(
    service: Service, emulator: EmulatorProcess, redis: aioredis.Redis, artifacts: Path
) -> None:
    assert service.web_url is not None
    async with browser_page(artifacts, "history_5000_back") as page:
        await page.goto(f"{service.web_url}/?symbol=BTCUSDT&interval=1m")
        await wait_panes_live(page, 1)
        n = 0
        while n < 5_300:
            step = await page.evaluate(SCROLL_LEFT)
            assert step["n"] > n, step  # a page arrived
            # the view does not jump: the left edge shows the same time as before
            assert step["after"] == step["before"], step
            # while it loads, the pane says so
            assert ["loading", False, "loading older history\u2026"] in step["seen"], step["seen"]
            n = step["n"]
        bars = await page.evaluate(
            "() => window.livecandle.view.bars.filter(b => b.state === 'official')"
            ".map(b => [b.time, b.open, b.high, b.low, b.close, b.volume])"
        )
    times = [b[0] for b in bars]
    assert len(bars) >= 5_000
    assert times == list(range(times[0], times[-1] + MIN, MIN))  # no duplicate, no gap
    expected = await emulator_klines(emulator, times[0], times[-1])
    assert [r[:6] for r in expected] == bars  # the exchange's candles, exactly
    # the pages fetched from the exchange were stored: the next reader gets them from Redis
    stored = await redis.zcount("klines_z:BTCUSDT:1m", times[0], times[-1])
    assert stored == len(times)
    async with httpx.AsyncClient(base_url=service.web_url) as client:
        again = (
            await client.get(
                "/api/history",
                params={"symbol": "BTCUSDT", "interval": "1m", "end": times[999], "limit": 1000},
            )
        ).json()
    assert again["source"] == "stored"
    assert [r[0] for r in again["candles"]] == times[:1000]


async def test_the_listing_ends_the_scrolling(service: Service, artifacts: Path) -> None:
    requests: list[str] = []
    async with browser_page(artifacts, "history_listing") as page:
        page.on("request", lambda r: requests.append(r.url) if "/api/history" in r.url else None)
        await page.goto(f"{service.web_url}/?symbol=BTCUSDT&interval=1d")
        await page.wait_for_function(
            "() => window.livecandle && window.livecandle.view.bars.length > 10"
        )
        await page.evaluate(
            "() => window.livecandle.view.chart.timeScale()"
            ".setVisibleLogicalRange({from: -20, to: 40})"
        )
        await page.wait_for_selector('.older[data-state="listing"]', timeout=15_000)
        text = await page.text_content(".older")
        assert text is not None and text.startswith("start of history (first candle ")
        asked = len(requests)
        await page.evaluate("() => window.livecandle.feed.loadOlder()")
        await page.evaluate(
            "() => window.livecandle.view.chart.timeScale()"
            ".setVisibleLogicalRange({from: -30, to: 30})"
        )
        await page.wait_for_timeout(300)  # nothing may happen: give it the chance
        assert len(requests) == asked  # the page stops asking at the listing
        times = await page.evaluate("() => window.livecandle.view.bars.map(b => b.time)")
        assert times == sorted(set(times))


async def test_a_web_process_without_fetcher_says_no_older_history(
    redis_url: str, redis: aioredis.Redis, artifacts: Path
) -> None:
    t0 = 1_700_000_040_000
    rows = [(t0 + i * MIN, flat_kline_member(t0 + i * MIN, "100.00000000")) for i in range(60)]
    await Store(redis).write_candles(SeriesKey.of("BTCUSDT", "1m"), rows, 1)
    port = free_port()  # nobody listens there
    dead = Endpoints(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    async with (
        running_service(redis_url, dead, "1m", roles=("web",), port=0) as svc,
        browser_page(artifacts, "history_unavailable") as page,
    ):
        await page.goto(f"{svc.web_url}/?symbol=BTCUSDT&interval=1m")
        await page.wait_for_function(
            "() => window.livecandle && window.livecandle.view.bars.length === 60"
        )
        await page.evaluate("() => window.livecandle.feed.loadOlder()")
        await page.wait_for_selector('.older[data-state="unavailable"]', timeout=10_000)
        assert await page.text_content(".older") == "no older history available here"
