"""Benchmark 8: a hostile reader cannot grow the web process's memory (issue 14).

wrk at 50 connections asks ``/api/klines`` and ``/api/v3/klines`` with a different aligned
future start each time (empty answers, so nothing is cached by size), for 20 s each: the
read cache is bounded by entries as well as bytes, so RSS levels off. A well-behaved read
of 1000 candles is timed before and after, so a cache that the flood evicted still serves.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.common import redis_server, rss_mb, service, wrk
from bench.reads import fill

# a random aligned minute in the 22nd century per request: 10^7 distinct starts
SCRIPT = """
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
request = function()
  local start = 4102444800000 + math.random(1, 10000000) * 60000
  return wrk.format("GET", "{path}" .. start)
end
"""

GOAL_MB = 40  # RSS growth over the whole flood


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-hostile-") as tmp,
        redis_server(Path(tmp)) as url,
    ):
        asyncio.run(fill(url))
        env = {"LIVECANDLE_SYMBOLS": "BTCUSDT", "LIVECANDLE_INTERVALS": "1m"}
        with service(url, "web", env) as web:
            normal = f"{web.url}/api/klines?symbol=BTCUSDT&interval=1m&limit=1000"
            before_read = wrk(normal, seconds=5)
            rss_before = rss_mb(web.pid)
            for path in (
                "/api/klines?symbol=BTCUSDT&interval=1m&start=",
                "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=",
            ):
                script = Path(tmp) / "distinct.lua"
                script.write_text(SCRIPT.replace("{path}", path))
                flood = wrk(web.url + path.split("?")[0], seconds=20, script=script)
                rss = rss_mb(web.pid)
                rows.append(
                    {
                        "bench": "hostile_reads",
                        "name": f"{path.split('?')[0]}, a new start per request (20 s)",
                        "req_per_s": flood["req_per_s"],
                        "requests": round(flood["req_per_s"] * 20),
                        "rss_mb": round(rss, 1),
                        "non_2xx": flood["non_2xx"],
                        "note": f"RSS {rss_before:.0f} -> {rss:.0f} MB; goal: growth <= "
                        f"{GOAL_MB} MB over both floods",
                    }
                )
            after_read = wrk(normal, seconds=5)
    rows.append(
        {
            "bench": "hostile_reads",
            "name": "GET /api/klines?limit=1000 before / after",
            "req_per_s": after_read["req_per_s"],
            "p99_ms": after_read["p99_ms"],
            "note": f"before: {before_read['req_per_s']:.0f} req/s, p99 "
            f"{before_read['p99_ms']:.1f} ms (the flood left the cache serving)",
        }
    )
    return rows
