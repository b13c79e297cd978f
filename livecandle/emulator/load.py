"""What the emulator costs feeding the whole market: ``python -m livecandle.emulator.load``.

Starts an emulator (``--synthetic`` symbols at ``--total-rate`` trades/s; its start-up
time is measured up to its first answer), subscribes aggTrade and kline streams of
every symbol over as many connections as 1,024 streams each need (SUBSCRIBE messages
under 4 KB, at most 4 a second, as Binance allows), then reads the emulator's CPU (% of
one core, from /proc) and RSS over ``--seconds``. The consumer only counts messages, so
it stays cheap. ``--url`` measures an emulator already running instead (pass ``--pid``
for its CPU and RSS).

Meanwhile a REST client in its own process (so the consumer's work does not delay it)
asks ``--rest-rate`` requests a second, half ``klines limit=1000`` (each symbol and
interval in turn, as a backfill does) and half ``aggTrades limit=1000``, on a fixed
schedule (a slow answer does not slow the asking): their latency p50/p99/max is reported
next to the emulator's loop lag (how late a 10 ms wake-up came, from its stats) during
the warm-up and the measurement, and the emulator's own time per REST answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import time
from typing import Any

import httpx
import websockets

from livecandle.emulator.gauges import hist_diff, percentile
from livecandle.emulator.process import EmulatorProcess

STREAMS_PER_CONNECTION = 1024
SUBSCRIBE_BYTES = 3800  # under Binance's ~4 KB
SUBSCRIBES_PER_S = 4  # under its 5 incoming messages a second


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _waited_s(pid: int) -> float:
    """Seconds the process's threads waited for a core while runnable (a shared
    machine's doing, not the emulator's: its loop lag includes it)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[1])
    return total / 1e9


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _batches(streams: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for s in streams:
        if size + len(s) + 3 > SUBSCRIBE_BYTES - 60:
            out.append([])
            size = 0
        out[-1].append(s)
        size += len(s) + 3
    return [b for b in out if b]


class Counts:
    def __init__(self) -> None:
        self.agg_trades = 0
        self.klines = 0
        self.finals = 0
        self.other = 0


async def _consume(url: str, streams: list[str], counts: Counts, ready: asyncio.Event) -> None:
    # no permessage-deflate, as the service asks (compression costs more than the market)
    async with websockets.connect(
        url + "/stream", max_size=None, max_queue=None, compression=None, ping_interval=None
    ) as ws:
        for i, batch in enumerate(_batches(streams)):
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": batch, "id": i}))
            await asyncio.sleep(1 / SUBSCRIBES_PER_S)
        ready.set()
        async for msg in ws:
            text = msg if isinstance(msg, str) else msg.decode()
            if '"e":"aggTrade"' in text:
                counts.agg_trades += 1
            elif '"e":"kline"' in text:
                counts.klines += 1
                if '"x":true' in text:
                    counts.finals += 1
            else:
                counts.other += 1


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    v = sorted(values)
    return {
        "p50_ms": round(1000 * v[len(v) // 2], 1),
        "p99_ms": round(1000 * v[min(len(v) - 1, int(len(v) * 0.99))], 1),
        "max_ms": round(1000 * v[-1], 1),
    }


async def _ask(
    rest_url: str, symbols: list[str], intervals: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    pairs = [(s.upper(), i) for s in symbols for i in intervals]
    random.Random(5).shuffle(pairs)
    upper = [s.upper() for s in symbols]
    latency: dict[str, list[float]] = {"klines": [], "aggTrades": []}
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def one(endpoint: str, params: dict[str, Any]) -> None:
            t0 = time.monotonic()
            try:
                r = await http.get(f"{rest_url}/api/v3/{endpoint}", params=params)
                key = str(r.status_code)
            except httpx.HTTPError as e:
                key = type(e).__name__
            latency[endpoint].append(time.monotonic() - t0)
            statuses[key] = statuses.get(key, 0) + 1

        tasks = []
        start = time.monotonic()
        i = 0
        while rate > 0 and (due := start + i / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if i % 2 == 0:
                symbol, interval = pairs[(i // 2) % len(pairs)]
                params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": 1000}
                tasks.append(asyncio.create_task(one("klines", params)))
            else:
                symbol = upper[(i // 2) % len(upper)]
                tasks.append(
                    asyncio.create_task(one("aggTrades", {"symbol": symbol, "limit": 1000}))
                )
            i += 1
        await asyncio.gather(*tasks)
    return {
        "rest_rate": rate,
        "rest_statuses": statuses,
        "klines_1000": {"n": len(latency["klines"]), **_quantiles(latency["klines"])},
        "aggTrades_1000": {"n": len(latency["aggTrades"]), **_quantiles(latency["aggTrades"])},
    }


def _ask_process(
    rest_url: str,
    symbols: list[str],
    intervals: list[str],
    rate: float,
    seconds: float,
    out: Any,
) -> None:
    out.put(asyncio.run(_ask(rest_url, symbols, intervals, rate, seconds)))


def _lag(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    hist = hist_diff(after["loop_lag"]["hist_ms"], before["loop_lag"]["hist_ms"])
    return {
        "p50_ms": percentile(hist, 0.5),
        "p99_ms": percentile(hist, 0.99),
        "max_ms": max(hist) if hist else None,
        "over_50ms": sum(v for k, v in hist.items() if k >= 50),
        "samples": sum(hist.values()),
    }


def _rest_cost(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for endpoint, x in after["rest_cost"].items():
        b = before["rest_cost"].get(endpoint, {"count": 0, "seconds": 0.0})
        n = x["count"] - b["count"]
        if n:
            out[endpoint] = {
                "n": n,
                "ms_per_request": round(1000 * (x["seconds"] - b["seconds"]) / n, 2),
            }
    return out


async def measure(
    rest_url: str,
    ws_url: str,
    pid: int | None,
    seconds: float,
    intervals: list[str],
    rest_rate: float = 0.0,
) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as http:
        info = (await http.get(rest_url + "/api/v3/exchangeInfo")).json()
    symbols = [s["symbol"].lower() for s in info["symbols"] if s["status"] == "TRADING"]
    streams = [
        f"{s}@{kind}" for s in symbols for kind in ["aggTrade"] + [f"kline_{i}" for i in intervals]
    ]
    groups = [
        streams[i : i + STREAMS_PER_CONNECTION]
        for i in range(0, len(streams), STREAMS_PER_CONNECTION)
    ]
    counts = Counts()
    readies = [asyncio.Event() for _ in groups]
    tasks = [
        asyncio.create_task(_consume(ws_url, g, counts, r))
        for g, r in zip(groups, readies, strict=True)
    ]
    await asyncio.gather(*(r.wait() for r in readies))
    # warm-up: each series' first candle reaches back into history (computed once)
    warm0 = time.monotonic()
    cpu_warm0 = _cpu_s(pid) if pid else 0.0
    async with httpx.AsyncClient(timeout=600) as http:
        stats_warm0 = (await http.get(rest_url + "/_emulator/stats")).json()
        while time.monotonic() - warm0 < 600:
            stats = (await http.get(rest_url + "/_emulator/stats")).json()
            if stats["streams"]["kline_series_cold"] == 0:
                break
            await asyncio.sleep(1.0)
    warmup_s = time.monotonic() - warm0
    warmup_cpu_s = (_cpu_s(pid) - cpu_warm0) if pid else None
    await asyncio.sleep(2.0)  # settle
    async with httpx.AsyncClient(timeout=600) as http:
        stats0 = (await http.get(rest_url + "/_emulator/stats")).json()
    ctx = multiprocessing.get_context("spawn")
    asked = ctx.Queue()
    asker = ctx.Process(
        target=_ask_process, args=(rest_url, symbols, intervals, rest_rate, seconds, asked)
    )
    asker.start()
    cpu0 = _cpu_s(pid) if pid else 0.0
    waited0 = _waited_s(pid) if pid else 0.0
    own0 = time.process_time()
    t0 = time.monotonic()
    base = (counts.agg_trades, counts.klines, counts.finals)
    rss_max = 0.0
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1.0)
        if pid:
            rss_max = max(rss_max, _rss_mb(pid))
    elapsed = time.monotonic() - t0
    cpu = (_cpu_s(pid) - cpu0) / elapsed if pid else None
    waited = (_waited_s(pid) - waited0) / elapsed if pid else None
    own = (time.process_time() - own0) / elapsed
    async with httpx.AsyncClient(timeout=600) as http:  # a stalled emulator answers late
        stats = (await http.get(rest_url + "/_emulator/stats")).json()
    rest = await asyncio.to_thread(asked.get)
    rest_s = sum(
        x["seconds"] - stats0["rest_cost"].get(e, {"seconds": 0.0})["seconds"]
        for e, x in stats["rest_cost"].items()
    )
    await asyncio.to_thread(asker.join)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "symbols": len(symbols),
        "streams": len(streams),
        "connections": len(groups),
        "warmup_s": round(warmup_s, 1),
        "warmup_emulator_cpu_s": None if warmup_cpu_s is None else round(warmup_cpu_s, 1),
        "seconds": round(elapsed, 1),
        "emulator_cpu_core_pct": None if cpu is None else round(100 * cpu, 1),
        "emulator_rss_mb_max": round(rss_max, 1) if pid else None,
        "emulator_waited_for_a_core_pct": None if waited is None else round(100 * waited, 1),
        "consumer_cpu_core_pct": round(100 * own, 1),
        "agg_trades_per_s": round((counts.agg_trades - base[0]) / elapsed),
        "klines_per_s": round((counts.klines - base[1]) / elapsed),
        "finals": counts.finals - base[2],
        "emulator_violations": stats["streams"]["violations"],
        "emulator_trades_total": stats["trades_total"],
        "loop_lag_warmup": _lag(stats0, stats_warm0),
        "loop_lag": _lag(stats, stats0),
        "emulator_gc": stats.get("gc"),
        **rest,
        "emulator_rest_ms_per_request": _rest_cost(stats, stats0),
        "emulator_rest_core_pct": round(100 * rest_s / elapsed, 1),
        "emulator_streams_core_pct": None
        if cpu is None
        else round(100 * (cpu - rest_s / elapsed), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", type=int, default=1600)
    p.add_argument("--total-rate", type=float, default=10_000.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--intervals", default="1m,5m,15m,1h,4h,1d")
    p.add_argument("--history-days", type=int, default=1100)
    p.add_argument("--rest-rate", type=float, default=20.0, help="REST requests/s (0: none)")
    p.add_argument("--url", help="an emulator already running (http://host:port)")
    p.add_argument("--pid", type=int, help="its process id (for CPU and RSS)")
    p.add_argument("--emulator-arg", action="append", default=[], help="passed to the emulator")
    args = p.parse_args()
    intervals = args.intervals.split(",")
    if args.url:
        ws_url = args.url.replace("http", "ws", 1)
        result = asyncio.run(
            measure(args.url, ws_url, args.pid, args.seconds, intervals, args.rest_rate)
        )
        print(json.dumps(result, indent=1))
        return
    t0 = time.monotonic()
    emu = EmulatorProcess(
        "--synthetic",
        str(args.synthetic),
        "--total-rate",
        str(args.total_rate),
        "--history-days",
        str(args.history_days),
        *args.emulator_arg,
        symbols="",
    ).start(timeout_s=120)
    startup = time.monotonic() - t0
    try:
        assert emu.proc is not None
        pid = emu.proc.pid
        rss_start = _rss_mb(pid)
        result = asyncio.run(
            measure(emu.rest_url, emu.ws_url, pid, args.seconds, intervals, args.rest_rate)
        )
    finally:
        emu.stop()
    result = {
        "startup_s": round(startup, 2),
        "emulator_rss_mb_at_start": round(rss_start, 1),
        "total_rate": args.total_rate,
        "emulator_args": args.emulator_arg,
        **result,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
