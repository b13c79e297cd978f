"""Benchmark 3: history reads at 50 concurrent connections (wrk, another process).

``GET /api/klines?limit=1000`` and ``GET /api/v3/klines?limit=1000`` served by one
livecandle web process, next to the same 1000 candles read straight from Redis with
redis-py (50 concurrent asyncio readers in another process) as the baseline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from bench.common import btc_row, redis_server, service, wrk
from livecandle.domain.model import SeriesKey
from livecandle.store import Store, connect

MIN = 60_000
T0 = 1_700_000_040_000
N = 5000

BASELINE = r"""
import asyncio, sys, time
import redis.asyncio as aioredis
async def main(url, seconds):
    r = aioredis.Redis.from_url(url, max_connections=64)
    lat = []
    stop = time.monotonic() + seconds
    async def worker():
        while time.monotonic() < stop:
            t = time.perf_counter()
            m = await r.zrange("klines_z:BTCUSDT:1m", "+inf", "-inf", byscore=True,
                               desc=True, offset=0, num=1000)
            assert len(m) == 1000
            lat.append(time.perf_counter() - t)
    await asyncio.gather(*(worker() for _ in range(50)))
    lat.sort()
    print(len(lat) / seconds, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000)
    await r.aclose()
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


async def fill(url: str) -> None:
    client = connect(url)
    store = Store(client)
    series = SeriesKey.of("BTCUSDT", "1m")
    rows = []
    for i in range(N):
        t = T0 + i * MIN
        rows.append((t, btc_row(t)))
    await store.write_candles(series, rows, 1)
    live = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "time": T0 + N * MIN,
        "close_time": T0 + N * MIN + MIN - 1,
        "open": "60719.27000000",
        "high": "60720.00000000",
        "low": "60700.00000000",
        "close": "60710.00000000",
        "volume": "1.00000000",
        "quote_volume": "60710.00000000",
        "trades": 3,
        "taker_buy_volume": "0.50000000",
        "taker_buy_quote_volume": "30355.00000000",
        "is_incomplete": True,
        "source": "live",
        "previous": None,
    }
    await store.set_live_candle(series, msgspec.json.encode(live))
    await client.aclose()


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-reads-") as tmp,
        redis_server(Path(tmp)) as url,
    ):
        asyncio.run(fill(url))
        out = subprocess.run(
            [sys.executable, "-c", BASELINE, url, "10"], capture_output=True, text=True, check=True
        ).stdout.split()
        base = {"req_per_s": float(out[0]), "p50_ms": float(out[1]), "p99_ms": float(out[2])}
        with service(
            url, "web", {"LIVECANDLE_SYMBOLS": "BTCUSDT", "LIVECANDLE_INTERVALS": "1m"}
        ) as web:
            chart = wrk(f"{web.url}/api/klines?symbol=BTCUSDT&interval=1m&limit=1000")
            mirror = wrk(f"{web.url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000")
    rows.append(
        {
            "bench": "reads",
            "name": "redis-py ZRANGE 1000 (baseline)",
            **base,
            "note": "50 asyncio readers, another process",
        }
    )
    for name, r in (
        ("GET /api/klines?limit=1000", chart),
        ("GET /api/v3/klines?limit=1000", mirror),
    ):
        rows.append(
            {
                "bench": "reads",
                "name": name,
                **r,
                "note": f"{r['req_per_s'] / base['req_per_s']:.2f}x the bare Redis read; "
                "goal >= 500 req/s, p99 <= 20 ms, >= 0.5x",
            }
        )
    return rows
