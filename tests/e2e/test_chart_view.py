"""The chart keeps what a user scrolled back to in place, whatever is drawn meanwhile on
either side (older pages on the left; a candle that starts, or one a reload drops, on the
right; both in one draw); at the newest bar the view follows new candles. A ChartView of
its own in the page, fed bar by bar, so each case happens in a known order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from livecandle.runtime.service import Service
from tests.e2e.browser import browser_page, chart_service
from tests.helpers import EmulatorProcess

pytestmark = pytest.mark.browser

# a ChartView in a div of its own; `window.cv` drives it
SETUP = """async () => {
  const { ChartView } = await import("/static/chart.js");
  const el = document.createElement("div");
  el.style.cssText = "position:fixed;left:0;top:0;width:1000px;height:400px;z-index:99";
  document.body.appendChild(el);
  const v = new ChartView(el, document.createElement("div"));
  const M = 60000, T0 = 1767225600000;
  const bar = (t, state) => ({time: t, open: "1", high: "2", low: "0.5", close: "1.5",
                               volume: "3", quoteVolume: "4", state});
  const official = (from, n) => Array.from({length: n}, (_, i) => bar(from + i * M, "official"));
  const ts = v.chart.timeScale();
  const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const settled = async () => {
    const t0 = performance.now();
    while ((v.pending || v.drawTimer || v.drawnLen !== v.bars.length || v.viewTarget)
           && performance.now() - t0 < 5000) await frame();
    await frame();
  };
  const range = () => ts.getVisibleLogicalRange();
  const left = () => v.bars[Math.round(range().from)].time;
  window.cv = {v, M, T0, bar, official, ts, settled, range, left};
  v.setAll(official(T0, 300), [bar(T0 + 300 * M, "live")]);
  await settled();
}"""

BACK = """async () => {
  const {ts, settled, left} = window.cv;
  ts.setVisibleLogicalRange({from: 40, to: 120});  // back in history: the newest bar out of view
  await settled();
  return left();
}"""


@pytest.fixture
async def service(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[Service]:
    async with chart_service(redis_url, emulator, "1m") as svc:
        yield svc


async def on_chart(service: Service, artifacts: Path, name: str, case: str) -> dict[str, Any]:
    """`case` run on a fresh ChartView scrolled back from the newest bar: returns the time
    at the left edge before (`before`) and after (`after`) with what `case` returns."""
    async with browser_page(artifacts, name) as page:
        await page.goto(f"{service.web_url}/?symbol=BTCUSDT&interval=1m")
        await page.evaluate(SETUP)
        before = await page.evaluate(BACK)
        result: dict[str, Any] = await page.evaluate(
            f"""async () => {{ const {{v, M, bar, official, settled, left, range}} = window.cv;
                const out = await ({case})();
                await settled();
                return {{...out, after: left(), n: v.bars.length, drawn: v.drawnLen,
                         range: range()}}; }}"""
        )
    return {"before": before, **result}


async def test_a_candle_that_starts_while_an_older_page_lands_leaves_the_view_in_place(
    service: Service, artifacts: Path
) -> None:
    # the new candle waits for the draw period; the older page is drawn at once (setData):
    # one draw adds bars on both sides
    r = await on_chart(
        service,
        artifacts,
        "view_new_and_older",
        """async () => {
          const last = v.bars[v.bars.length - 1];
          v.update([bar(last.time + M, "live")]);
          const added = v.prependOlder(official(v.bars[0].time - 100 * M, 100));
          return {added};
        }""",
    )
    assert r["added"] == 100 and r["n"] == r["drawn"] == 402, r
    assert r["after"] == r["before"], r


async def test_a_reload_that_drops_the_newest_candle_leaves_the_view_in_place(
    service: Service, artifacts: Path
) -> None:
    # a reload (official candles after a close) without the live candle the chart drew
    r = await on_chart(
        service,
        artifacts,
        "view_reload_drops",
        """async () => {
          const official300 = v.bars.filter(b => b.state === "official");
          v.setAll(official300, [], false);
          return {};
        }""",
    )
    assert r["n"] == r["drawn"] == 300, r
    assert r["after"] == r["before"], r


async def test_an_older_page_then_a_dropped_candle_in_one_frame_leave_the_view_in_place(
    service: Service, artifacts: Path
) -> None:
    # the second draw comes before the chart has applied the view the first one kept
    r = await on_chart(
        service,
        artifacts,
        "view_older_then_drop",
        """async () => {
          v.prependOlder(official(v.bars[0].time - 100 * M, 100));
          v.setAll(v.bars.filter(b => b.state === "official"), [], false);
          v.flush();
          return {};
        }""",
    )
    assert r["n"] == r["drawn"] == 400, r
    assert r["after"] == r["before"], r


async def test_a_reload_that_redraws_every_bar_leaves_the_view_in_place(
    service: Service, artifacts: Path
) -> None:
    # a reload that changes more bars than are updated one by one is drawn whole, with
    # a candle more on the right
    r = await on_chart(
        service,
        artifacts,
        "view_reload_whole",
        """async () => {
          const bars = v.bars.filter(b => b.state === "official")
            .map(b => ({...b, close: "1.6"}));
          const next = bars[bars.length - 1].time + M;
          v.setAll([...bars, bar(next, "official")], [bar(next + M, "live")], false);
          return {};
        }""",
    )
    assert r["n"] == r["drawn"] == 302, r
    assert r["after"] == r["before"], r


async def test_at_the_newest_candle_the_view_follows_new_candles(
    service: Service, artifacts: Path
) -> None:
    async with browser_page(artifacts, "view_follows") as page:
        await page.goto(f"{service.web_url}/?symbol=BTCUSDT&interval=1m")
        await page.evaluate(SETUP)
        r = await page.evaluate(
            """async () => {
              const {v, M, bar, official, settled, range, ts} = window.cv;
              ts.scrollToRealTime();
              await settled();
              for (let k = 1; k <= 3; k++) {
                const last = v.bars[v.bars.length - 1];
                v.update([bar(last.time + M, "live")]);
                if (k === 2) v.prependOlder(official(v.bars[0].time - 100 * M, 100));
                await settled();
              }
              return {to: range().to, newest: v.bars.length - 1, n: v.bars.length};
            }"""
        )
    assert r["n"] == 404, r
    assert r["to"] >= r["newest"], r  # the newest candle is in view
