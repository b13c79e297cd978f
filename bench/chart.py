"""Benchmark: the chart's smoothness. Four 1m charts live at the emulator's busiest
symbols for 30 s in headless Chromium: the longest main-thread task after the initial
load (Long Tasks API: a PerformanceObserver of ``longtask``, which reports every task
over 50 ms) and the share of animation frames over 50 ms. Goal: no task over 50 ms.

BENCH_CHART_SECONDS and BENCH_CHART_RATE (trades/s per symbol) change the run.
BENCH_CHART_TRACE=FILE also records a Chromium trace of the window (timeline categories:
it costs the page some time, so figures of such a run are not the benchmark's) and
reports the main thread's longest task in thread CPU time beside its wall time: on a
shared machine a task preempted for others is long in wall time only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import pid_cpu_seconds, redis_server, service
from livecandle.emulator.process import EmulatorProcess

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
SECONDS = float(os.environ.get("BENCH_CHART_SECONDS", "30"))
RATE = float(os.environ.get("BENCH_CHART_RATE", "100"))
TRACE = os.environ.get("BENCH_CHART_TRACE")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

OBSERVE = """() => {
  const perf = {tasks: [], frames: [], start: performance.now(), startMs: Date.now()};
  window.__perf = perf;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) perf.tasks.push([e.duration, e.startTime - perf.start]);
  }).observe({type: "longtask"});
  let last = performance.now();
  const frame = (t) => { perf.frames.push(t - last); last = t; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  perf.updates0 = window.livecandle.layout.panes.map(p => p.view.updates);
}"""

RESULT = """() => {
  const p = window.__perf;
  return {tasks: p.tasks.map(t => t[0]), at_s: p.tasks.map(t => t[1] / 1000),
          start_ms: p.startMs, end_ms: Date.now(), frames: p.frames,
          updates: window.livecandle.layout.panes.map((x, i) => x.view.updates - p.updates0[i]),
          bars: window.livecandle.layout.panes.map(x => x.view.bars.length)};
}"""


def measure(url: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    charts = ",".join(f"{s}:1m" for s in SYMBOLS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/?layout=4&charts={charts}")
            page.wait_for_function(
                "() => window.livecandle && window.livecandle.layout.panes.length === 4 &&"
                " window.livecandle.layout.panes.every(p => p.view.bars.length > 100) &&"
                " document.getElementById('status').dataset.state === 'live'",
                timeout=60_000,
            )
            page.wait_for_timeout(2_000)  # the initial load is over
            page.evaluate(OBSERVE)
            if TRACE:
                browser.start_tracing(
                    page=page, path=TRACE, categories=["devtools.timeline", "toplevel"]
                )
            page.wait_for_timeout(SECONDS * 1000)
            got: dict[str, Any] = page.evaluate(RESULT)
            if TRACE:
                browser.stop_tracing()
                got["trace"] = traced_tasks(Path(TRACE))
            got["errors"] = errors
            return got
        finally:
            browser.close()


def traced_tasks(path: Path) -> dict[str, Any]:
    """The page's main-thread tasks in a trace: the longest in wall and in thread time."""
    events = json.loads(path.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    tasks: dict[tuple[int, int], list[tuple[float, float]]] = {m: [] for m in mains}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if e.get("name") == "ThreadControllerImpl::RunTask" and key in tasks:
            tasks[key].append((e.get("dur", 0) / 1000, e.get("tdur", 0) / 1000))
    page = max(tasks.values(), key=len, default=[])  # the page's renderer: the busiest
    return {
        "longest_task_wall_ms": round(max((w for w, _ in page), default=0.0), 1),
        "longest_task_cpu_ms": round(max((c for _, c in page), default=0.0), 1),
        "tasks_over_50ms_cpu": sum(1 for _, c in page if c > 50),
    }


def run() -> list[dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-chart-") as tmp,
        redis_server(Path(tmp)) as redis_url,
        EmulatorProcess(
            "--rate",
            str(RATE),
            "--history-days",
            "2",
            "--no-weight-limits",
            symbols=",".join(SYMBOLS),
        ) as emu,
    ):
        with httpx.Client(base_url=emu.rest_url, timeout=120) as client:
            for s in SYMBOLS:  # the emulator computes history once: not during the run
                client.get("/api/v3/klines", params={"symbol": s, "interval": "1m", "limit": 2})
        env = {
            "LIVECANDLE_SYMBOLS": ",".join(SYMBOLS),
            "LIVECANDLE_INTERVALS": "1m",
            "LIVECANDLE_BINANCE_REST_URL": emu.rest_url,
            "LIVECANDLE_BINANCE_WS_URL": emu.ws_url,
        }
        with service(redis_url, "fetcher,stream,web", env) as svc:
            time.sleep(3)  # backfill and the stream's first candles
            c0 = pid_cpu_seconds(svc.pid)
            t0 = time.monotonic()
            load0 = os.getloadavg()[0]
            got = measure(svc.url)
            cpu = (pid_cpu_seconds(svc.pid) - c0) / (time.monotonic() - t0)
            load1 = os.getloadavg()[0]
    frames = got["frames"]
    slow = [f for f in frames if f > 50]
    longest = max(got["tasks"], default=0.0)
    return [
        {
            "bench": "chart",
            "name": f"4 x 1m charts, {RATE:g} trades/s each, {SECONDS:g} s",
            "longest_task_ms": round(longest, 1),
            "tasks_over_50ms": len(got["tasks"]),
            # the longest ones and when (s into the window): a minute close is the busy
            # moment (new bars, the closed candles' final values, official reloads)
            "longest_tasks": " ".join(
                f"{d:.0f}@{t:.1f}s"
                for d, t in sorted(zip(got["tasks"], got["at_s"], strict=True), reverse=True)[:3]
            ),
            "minute_closes": got["end_ms"] // 60_000 - got["start_ms"] // 60_000,
            "goal": "no task over 50 ms",
            "met": "yes" if longest <= 50 else "NO",
            "frames": len(frames),
            "frames_over_50ms_pct": round(100 * len(slow) / max(1, len(frames)), 2),
            "updates": sum(got["updates"]),
            "cpu_service": cpu,
            "console_errors": len(got["errors"]),
            "load_avg_1m": f"{load0:.1f}->{load1:.1f}",  # the machine is shared: noisy?
            **got.get("trace", {}),
        }
    ]
