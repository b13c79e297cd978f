"""The chart stays smooth with several charts live: live ticks and reloads of official
candles redraw only the bars they changed (no setData of the whole series), and charts
that change together are drawn in turn, one per animation frame (bench/chart.py measures
the long tasks this avoids), in headless Chromium against the service fed by the
emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from livecandle.runtime.service import Service
from tests.e2e.browser import browser_page, chart_service, wait_panes_live
from tests.helpers import EmulatorProcess

pytestmark = pytest.mark.browser

FOUR = "layout=4&charts=BTCUSDT:1m,ETHUSDT:1m,BTCUSDT:1h,ETHUSDT:1h"

# every series' setData and update counted from now on
SPY = """() => {
  window.__calls = {setData: 0, update: 0, pop: 0};
  for (const p of window.livecandle.layout.panes) {
    for (const s of [p.view.candles, p.view.volume]) {
      for (const name of ["setData", "update", "pop"]) {
        const f = s[name].bind(s);
        s[name] = (...a) => { window.__calls[name] += 1; return f(...a); };
      }
    }
  }
  return window.livecandle.layout.panes.map(p => p.view.updates);
}"""

# In every chart at once (one task): a reload that changes an older official bar and
# appends a bar far ahead (no live tick reaches it); frame by frame, how many charts
# draw the appended bar; then a reload without it.
BURST = """async () => {
  const panes = window.livecandle.layout.panes;
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  await frame();
  const marks = panes.map((p) => {
    const v = p.view;
    const bars = v.bars.map((b) => ({ ...b }));
    const k = bars.length - 5;
    const b = bars[k];
    const close = b.close === b.low ? b.high : b.low;
    bars[k] = { ...b, close };
    const last = bars[bars.length - 1];
    const ahead = last.time + 100 * (last.time - bars[bars.length - 2].time);
    bars.push({ ...last, time: ahead, state: "forming" });
    v.setAll(bars, [], false); // as a reload of the newest history does
    return { time: b.time, close: Number(close), ahead: ahead / 1000 };
  });
  const drawnAhead = () => panes.filter(
    (p, i) => p.view.candles.data().some((b) => b.time === marks[i].ahead)).length;
  const progress = [drawnAhead()];
  while (progress.length < 12 && progress[progress.length - 1] < panes.length) {
    await frame();
    progress.push(drawnAhead());
  }
  // a reload without the bar ahead (a live bar the server is behind): removed at the end
  for (const p of panes) p.view.setAll(p.view.bars.slice(0, -1), [], false);
  for (let f = 0; f < 6; f++) await frame();
  const calls = { ...window.__calls };
  const drawn = panes.map((p, i) => {
    const d = p.view.candles.data();
    const bar = d.find((x) => x.time === marks[i].time / 1000);
    return {
      close: bar.close, want: marks[i].close,
      times: d.map((x) => x.time * 1000),
      model: p.view.bars.map((x) => x.time),
    };
  });
  return { progress, calls, drawn, gone: drawnAhead() };
}"""


@pytest.fixture
async def service(
    redis_url: str, redis: aioredis.Redis, emulator: EmulatorProcess
) -> AsyncIterator[Service]:
    async with chart_service(redis_url, emulator, "1m,1h") as svc:
        yield svc


async def test_live_ticks_and_reloads_redraw_in_place_one_chart_per_frame(
    service: Service, artifacts: Path
) -> None:
    async with browser_page(
        artifacts, "smoothness_4_charts", viewport={"width": 1600, "height": 900}
    ) as page:
        await page.goto(f"{service.web_url}/?{FOUR}")
        await wait_panes_live(page, 4, bars=20)
        before = await page.evaluate(SPY)
        # live ticks: every chart's forming candle moves, drawn by update alone
        await page.wait_for_function(
            f"""() => window.livecandle.layout.panes.every(
                (p, i) => p.view.updates > {before}[i] + 5)""",
            timeout=20_000,
        )
        got: dict[str, Any] = await page.evaluate(BURST)
        # the four charts changed in one task are drawn in turn: never two in one frame
        progress = got["progress"]
        assert progress[0] <= 1 and progress[-1] == 4, progress
        assert all(b - a <= 1 for a, b in pairwise(progress)), progress
        # and by updating bars in place: no setData of the whole series
        calls = got["calls"]
        assert calls["update"] > 0 and calls["pop"] > 0 and calls["setData"] == 0, calls
        assert got["gone"] == 0
        for d in got["drawn"]:
            assert d["close"] == d["want"]  # the older bar changed in place
            assert d["times"] == d["model"]  # no bar missing, duplicated or out of order
