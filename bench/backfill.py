"""Benchmark 4: backfill.

(a) Candles stored per second: the store's atomic batch write alone, and the whole
backfill (emulator REST -> parse -> store, 4 series at once, emulator limits off), next to
``redis-benchmark`` pipelining ZADDs of members of the same size in the same run.
(b) With the emulator enforcing Binance's weight rule (scaled to a 5 s window so the run
is short), the share of the allowed weight the fetcher uses, and its 429s.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.common import redis_server
from livecandle.domain.model import SeriesKey
from livecandle.emulator.process import EmulatorProcess
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.official.background_fetcher import BackgroundFetcher
from livecandle.store import Store, connect

MIN = 60_000
MEMBER = msgspec.json.encode(
    [
        1_700_000_040_000,
        "60685.22000000",
        "60729.84000000",
        "60670.90000000",
        "60719.27000000",
        "21.63272000",
        1_700_000_099_999,
        "1313200.01340410",
        617,
        "12.28492000",
        "745719.41022840",
        "0",
    ]
)


async def store_only(url: str, batches: int = 100, size: int = 1000) -> float:
    """Candles/s through Store.write_candles (one Lua call per 1000-row batch)."""
    client = connect(url)
    store = Store(client)
    series = SeriesKey.of("BENCHUSDT", "1m")
    t0 = 1_600_000_020_000
    pages = []
    for b in range(batches):
        rows = []
        for i in range(size):
            t = t0 + (b * size + i) * MIN
            rows.append((t, MEMBER.replace(b"1700000040000", str(t).encode(), 1)))
        pages.append(rows)
    started = time.perf_counter()
    for rows in pages:
        await store.write_candles(series, rows, 1)
    elapsed = time.perf_counter() - started
    await client.aclose()
    return batches * size / elapsed


def redis_benchmark(url: str, n: int = 200_000) -> float:
    """ZADD of same-size members, pipelined 1000 deep: requests (= candles) per second."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    member = "m__rand_int__" + "x" * (len(MEMBER) - 13)
    out = subprocess.run(
        [
            "redis-benchmark",
            "-p",
            port,
            "-n",
            str(n),
            "-P",
            "1000",
            "-r",
            "100000000",
            "-q",
            "ZADD",
            "bench:z",
            "__rand_int__",
            member,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"([\d.]+) requests per second", out.replace(",", ""))
    return float(m.group(1)) if m else float("nan")


async def whole_backfill(url: str, emu: EmulatorProcess, days: int) -> tuple[float, int]:
    client = connect(url)
    store = Store(client)
    series = [SeriesKey.of(s, "1m") for s in ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")]
    async with BinanceRest(emu.rest_url) as rest:
        await rest.server_time()
        now = rest.clock.now_ms()
        fetcher = BackgroundFetcher(store, rest, series, concurrency=4)
        start = (now // MIN - days * 1440) * MIN
        end = start + days * 1440 * MIN - 1
        # first pass warms the emulator's caches (it computes klines from trades)
        await asyncio.gather(*(fetcher.sync(s, start, end) for s in series))
        await client.flushall()
        started = time.perf_counter()
        results = await asyncio.gather(*(fetcher.sync(s, start, end) for s in series))
        elapsed = time.perf_counter() - started
    await client.aclose()
    stored = sum(r.stored for r in results)
    return stored / elapsed, stored


async def weight_share(
    url: str, emu: EmulatorProcess, seconds: float, days: int
) -> dict[str, float]:
    client = connect(url)
    store = Store(client)
    series = [SeriesKey.of(s, "1m") for s in ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")]
    async with BinanceRest(emu.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, series, concurrency=4)
        now = await rest.server_time()
        start = (now // MIN - days * 1440) * MIN
        # warm the emulator's caches with its limits off, so that what is measured is
        # the fetcher's pacing, not how fast the emulator computes klines from trades
        emu.control(enforce_weights=False)
        await asyncio.gather(*(fetcher.sync(s, start) for s in series))
        await client.flushall()
        emu.control(enforce_weights=True, reset_limits=True)
        await fetcher.prepare()  # learns the limit and window from exchangeInfo
        window_ms = rest.budget.window_ms
        limit = rest.budget.limit
        now = rest.clock.now_ms()
        await asyncio.sleep((window_ms - now % window_ms) / 1000)  # at a window's start
        emu.control(reset_limits=True)
        windows = int(seconds * 1000 // window_ms)
        tasks = [asyncio.create_task(fetcher.sync(s, start)) for s in series]
        await asyncio.sleep(windows * window_ms / 1000)
        state = emu.state()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()
    return {
        "share": state["accepted_weight"] / (limit * windows),
        "windows": windows,
        "limit": limit,
        "window_s": window_ms / 1000,
        "rejected_429": state["rejected_429"],
        "rejected_418": state["rejected_418"],
    }


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    symbols = "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT"
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-backfill-") as tmp,
        redis_server(Path(tmp)) as url,
    ):
        store_rates = [asyncio.run(store_only(url)) for _ in range(3)]
        bench_rates = [redis_benchmark(url) for _ in range(3)]
        with EmulatorProcess(
            "--no-weight-limits", "--history-days", "60", "--rate", "1", symbols=symbols
        ) as emu:
            whole = [asyncio.run(whole_backfill(url, emu, days=20)) for _ in range(3)]
        with EmulatorProcess(
            "--weight-limit",
            "60",
            "--weight-window",
            "2",
            "--history-days",
            "60",
            "--rate",
            "1",
            symbols=symbols,
        ) as emu:
            share = asyncio.run(weight_share(url, emu, seconds=12, days=50))
    base = statistics.median(bench_rates)
    store_rate = statistics.median(store_rates)
    whole_rate = statistics.median(r for r, _ in whole)
    rows.append(
        {
            "bench": "backfill",
            "name": "redis-benchmark ZADD -P 1000 (baseline)",
            "candles_per_s": base,
            "note": f"members of {len(MEMBER)} bytes",
        }
    )
    rows.append(
        {
            "bench": "backfill",
            "name": "Store.write_candles, 1000-row batches",
            "candles_per_s": store_rate,
            "note": f"{store_rate / base:.0%} of redis-benchmark (goal >= 50%), "
            "one member per open time, meta, notification",
        }
    )
    rows.append(
        {
            "bench": "backfill",
            "name": "whole backfill: emulator REST + parse + store",
            "candles_per_s": whole_rate,
            "note": f"4 series x 20 days of 1m, {whole[0][1]:,} candles; goal >= 100,000/s",
        }
    )
    rows.append(
        {
            "bench": "backfill",
            "name": "weight used with the emulator's limits",
            "share": share["share"],
            "note": f"{share['limit']:.0f} weight per {share['window_s']:.0f} s x "
            f"{share['windows']:.0f} windows (Binance: 6000 per 60 s);"
            f" 429s: {share['rejected_429']:.0f}, 418s: {share['rejected_418']:.0f};"
            " goal >= 95% with zero 429s",
        }
    )
    return rows
