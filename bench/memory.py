"""Benchmark 7: memory.

Redis bytes per stored official candle (MEMORY USAGE of ``klines_z`` and the growth of
``used_memory``, 100,000 real-shaped candles), and the resident memory of a service
process following 50 symbols x 6 intervals live from the emulator.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec

from bench.common import btc_row, redis_server, rss_mb, service
from livecandle.domain.model import SeriesKey
from livecandle.emulator.process import EmulatorProcess
from livecandle.store import Store, connect

MIN = 60_000
N = 100_000
SYMBOLS = [f"S{i:02d}USDT" for i in range(50)]


async def small_series(url: str, n: int = 2000) -> float:
    """Bytes per candle of a 2000-candle series (listpack under the embedded config)."""
    client = connect(url)
    store = Store(client)
    series = SeriesKey.of("ETHUSDT", "1h")
    t0 = 1_600_000_000_000 // 3_600_000 * 3_600_000
    rows = []
    for i in range(n):
        t = t0 + i * 3_600_000
        rows.append(
            (
                t,
                msgspec.json.encode(
                    [
                        t,
                        "3685.22000000",
                        "3729.84000000",
                        "3670.90000000",
                        "3719.27000000",
                        "21.63272000",
                        t + 3_599_999,
                        "131320.01340410",
                        617,
                        "12.28492000",
                        "74571.41022840",
                        "0",
                    ]
                ),
            )
        )
    await store.write_candles(series, rows, 1)
    usage = int(cast(int, await client.memory_usage(store.keys.klines(series), samples=0)))
    await client.aclose()
    return usage / n


async def bytes_per_candle(url: str) -> dict[str, float]:
    client = connect(url)
    store = Store(client)
    series = SeriesKey.of("BTCUSDT", "1m")
    before = int((await client.info("memory"))["used_memory"])
    t0 = 1_600_000_020_000
    for b in range(N // 1000):
        rows = []
        for i in range(1000):
            t = t0 + (b * 1000 + i) * MIN
            rows.append((t, btc_row(t)))
        await store.write_candles(series, rows, 1)
    after = int((await client.info("memory"))["used_memory"])
    usage = int(cast(int, await client.memory_usage(store.keys.klines(series), samples=0)))
    member = len(rows[0][1])
    await client.aclose()
    return {"memory_usage": usage / N, "used_memory": (after - before) / N, "member": float(member)}


def service_rss(redis_url: str, seconds: float = 30) -> dict[str, float]:
    with EmulatorProcess("--rate", "20", "--history-days", "2", symbols=",".join(SYMBOLS)) as emu:
        env = {
            "LIVECANDLE_SYMBOLS": ",".join(SYMBOLS),
            "LIVECANDLE_INTERVALS": "1m,5m,15m,1h,4h,1d",
            "LIVECANDLE_BINANCE_REST_URL": emu.rest_url,
            "LIVECANDLE_BINANCE_WS_URL": emu.ws_url,
            "LIVECANDLE_BACKFILL_CANDLES": "100",
        }
        with service(redis_url, "all", env) as svc:
            time.sleep(seconds)  # live for a while before RSS is read
            health = httpx.get(f"{svc.url}/healthz", timeout=5).json()
            seeded = sum(1 for s in health["stream"]["symbols"].values() if s["seeded"])
            return {
                "rss_mb": rss_mb(svc.pid),
                "seeded_symbols": seeded,
                "messages": health["stream"]["messages"],
            }


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="lc-bench-mem-") as tmp, redis_server(Path(tmp)) as url:
        per = asyncio.run(bytes_per_candle(url))
        small = asyncio.run(small_series(url))
        svc = service_rss(url)
    return [
        {
            "bench": "memory",
            "name": "Redis bytes per official candle (MEMORY USAGE)",
            "value": per["memory_usage"],
            "note": f"member JSON {per['member']:.0f} B; goal <= 260 B",
        },
        {
            "bench": "memory",
            "name": "Redis bytes per official candle (used_memory growth)",
            "value": per["used_memory"],
            "note": "includes the meta hash and allocator slack",
        },
        {
            "bench": "memory",
            "name": "Redis bytes per official candle, 2,000-candle series",
            "value": small,
            "note": "listpack-encoded (zset-max-listpack-entries 2048, the embedded default)",
        },
        {
            "bench": "memory",
            "name": "service RSS, 50 symbols x 6 intervals live (MB)",
            "value": svc["rss_mb"],
            "note": f"fetcher + stream + web in one process; {svc['seeded_symbols']:.0f} "
            f"symbols seeded, {svc['messages']:,.0f} messages",
        },
    ]
