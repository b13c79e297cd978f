"""Benchmark: the drop-in Binance proxy under many polling bots (issue 11).

The emulator (its own process, Binance's weight limit: 6,000 a minute, the real 60 s
window) trades 20 symbols; the service (one process, every role: stream, fetcher and the
web role serving the proxy) follows them with 1m and 1h candles on its own Redis. N bots
(1, 10, 100: asyncio tasks, each with its own httpx connection, in one client process,
two from 10 bots on) each poll, every second, for 10 symbols: ``klines`` (1m, limit
100), ``ticker/24hr`` (one symbol) and ``depth`` (limit 20): 30 requests a bot a second.
Per N, ``MEASURE_S`` seconds:

- upstream weight per minute (the emulator's accepted weight, delta) and the upstream
  requests by endpoint; the same with no bot at all first (the service's own: live
  seeds, reconciles, exchangeInfo); goal: flat as N grows;
- p50/p99 latency of each endpoint, requests made and not 2xx, of the bots;
- upstream 429s / 418s (goal 0), the proxy's own 429s (from its ``/metrics``);
- CPU of the service, the emulator, Redis and the client processes, of the whole machine
  (every process, ours or not) and the load average (the machine is shared: 2 cores for
  all of them), and the service's CPU per request.

BENCH_PROXY_CLIENTS (``1,10,100``), BENCH_PROXY_S (30) change the run;
BENCH_PROXY_BACKFILL (1500: a whole day of 1m candles, so the 24 h tickers are local;
with the service's default 1000 every ``ticker/24hr`` is forwarded).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.common import pid_cpu_seconds, redis_server, service
from livecandle.emulator.process import EmulatorProcess

SYMBOLS = [f"P{i:02d}USDT" for i in range(20)]
POLLED = SYMBOLS[:10]
CLIENTS = [int(n) for n in os.environ.get("BENCH_PROXY_CLIENTS", "1,10,100").split(",")]
MEASURE_S = float(os.environ.get("BENCH_PROXY_S", "30"))
ENDPOINTS = ("klines", "ticker/24hr", "depth")
BACKFILL = os.environ.get("BENCH_PROXY_BACKFILL", "1500")

CLIENT = r"""
import asyncio, json, sys, time
import httpx
try:
    import uvloop
except ImportError:
    uvloop = None
url, n, symbols, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), float(sys.argv[4])
REQUESTS = [
    ("klines", "/api/v3/klines", lambda s: {"symbol": s, "interval": "1m", "limit": "100"}),
    ("ticker/24hr", "/api/v3/ticker/24hr", lambda s: {"symbol": s}),
    ("depth", "/api/v3/depth", lambda s: {"symbol": s, "limit": "20"}),
]
lat = {name: [] for name, _, _ in REQUESTS}
bad = {name: 0 for name, _, _ in REQUESTS}
statuses = {}
late = [0]

async def bot(i, start, stop):
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        due = start + i / n  # the bots' seconds spread over the second
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            for s in symbols:
                for name, path, params in REQUESTS:
                    t0 = time.perf_counter()
                    try:
                        r = await c.get(path, params=params(s))
                        code = r.status_code
                    except httpx.HTTPError as e:
                        code = type(e).__name__
                    lat[name].append((time.perf_counter() - t0) * 1000)
                    if code != 200:
                        bad[name] += 1
                        statuses[str(code)] = statuses.get(str(code), 0) + 1
            due += 1.0
            if due < time.monotonic():  # a round took over a second: the next at once
                late[0] += 1
                due = time.monotonic()

async def main():
    start = time.monotonic() + 0.5
    c0 = time.process_time()
    await asyncio.gather(*(bot(i, start, start + seconds) for i in range(n)))
    cpu = time.process_time() - c0
    print(json.dumps({"lat": lat, "bad": bad, "statuses": statuses, "late": late[0],
                      "cpu_s": cpu, "wall_s": time.monotonic() - start + 0.5}))

if uvloop is not None:
    uvloop.install()
asyncio.run(main())
"""


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def _stats(emu: EmulatorProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(emu.rest_url + "/_emulator/stats", timeout=30).json()
    return stats


def _metrics(url: str) -> dict[str, float]:
    """The service's ``/metrics`` samples (name with labels -> value)."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _machine_busy_s() -> float:
    """CPU seconds every process of the machine has used (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _bots(url: str, n: int, seconds: float) -> list[subprocess.Popen[str]]:
    procs = 1 if n < 10 else 2  # one process's loop is one core at most
    shares = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
    return [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, url, str(share), ",".join(POLLED), str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]


def _window(
    emu: EmulatorProcess, svc_url: str, svc_pid: int, redis_pid: int, n: int, seconds: float
) -> dict[str, Any]:
    """One measured window with ``n`` bots (0: the service alone)."""
    assert emu.proc is not None
    s0, m0 = _stats(emu), _metrics(svc_url)
    cpu0 = (pid_cpu_seconds(svc_pid), pid_cpu_seconds(emu.proc.pid), pid_cpu_seconds(redis_pid))
    load0 = os.getloadavg()[0]
    busy0 = _machine_busy_s()
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    if n:
        for p in _bots(svc_url, n, seconds):
            out, err = p.communicate(timeout=seconds + 300)
            if p.returncode != 0:
                print(err[-2000:], file=sys.stderr)
                continue
            results.append(json.loads(out))
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - t0
    s1, m1 = _stats(emu), _metrics(svc_url)
    cpu_svc = (pid_cpu_seconds(svc_pid) - cpu0[0]) / elapsed
    cpu_emu = (pid_cpu_seconds(emu.proc.pid) - cpu0[1]) / elapsed
    cpu_redis = (pid_cpu_seconds(redis_pid) - cpu0[2]) / elapsed
    busy = (_machine_busy_s() - busy0) / elapsed
    by0, by1 = s0["requests_by_endpoint"], s1["requests_by_endpoint"]
    upstream = {k: v - by0.get(k, 0) for k, v in by1.items() if v - by0.get(k, 0)}
    row: dict[str, Any] = {
        "bench": "proxy",
        "clients": n,
        "upstream_weight_per_min": round(
            (s1["accepted_weight"] - s0["accepted_weight"]) / elapsed * 60
        ),
        "upstream_requests": json.dumps(upstream, sort_keys=True),
        "upstream_429": s1["rejected_429"] - s0["rejected_429"],
        "upstream_418": s1["rejected_418"] - s0["rejected_418"],
    }

    def delta(name: str) -> int:
        return round(m1.get(name, 0) - m0.get(name, 0))

    answers = 'livecandle_proxy_requests_total{answer="%s"}'
    depth = 'livecandle_depth_requests_total{answer="%s"}'
    row["proxy_own_429"] = delta(answers % "refused_429")
    # requests the proxy sent upstream / answered from its 1 s cache / from its own data
    row["proxy_forwarded"] = delta(answers % "forwarded") + delta(depth % "forwarded")
    row["proxy_cached"] = delta(answers % "cached")
    row["proxy_local"] = delta(answers % "local") + delta(depth % "local")
    if results:
        requests = 0
        for name in ENDPOINTS:
            lat = [v for r in results for v in r["lat"][name]]
            requests += len(lat)
            p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
            row[f"{name}_p50_ms"] = round(p50, 1) if p50 is not None else None
            row[f"{name}_p99_ms"] = round(p99, 1) if p99 is not None else None
        row["requests"] = requests
        row["req_per_s"] = round(requests / max(r["wall_s"] for r in results))
        row["offered_per_s"] = n * len(POLLED) * len(ENDPOINTS)
        row["non_2xx"] = sum(sum(r["bad"].values()) for r in results)
        statuses: dict[str, int] = {}
        for r in results:
            for k, v in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        row["statuses"] = json.dumps(statuses) if statuses else ""
        row["late_rounds"] = sum(r["late"] for r in results)
        row["cpu_clients"] = round(sum(r["cpu_s"] for r in results) / elapsed, 2)
    row["cpu_service"] = round(cpu_svc, 2)
    row["cpu_emulator"] = round(cpu_emu, 2)
    row["cpu_redis"] = round(cpu_redis, 2)
    row["cpu_machine"] = round(busy, 2)  # of os.cpu_count() cores, every process's
    if results:
        row["service_cpu_ms_per_request"] = round(cpu_svc * 1000 / row["req_per_s"], 2)
    row["load_avg_1m"] = f"{load0:.1f}->{os.getloadavg()[0]:.1f}"
    return row


def _warm(url: str, emu: EmulatorProcess, timeout_s: float = 180.0) -> None:
    """Until the service holds its candles (the fetcher's backfill, the first ticker
    windows) and every polled symbol's book is in sync: the weight the start-up costs
    is not the steady state's."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.monotonic() < deadline:
            for s in POLLED:
                c.get("/api/v3/depth", params={"symbol": s, "limit": "20"})
                c.get("/api/v3/ticker/24hr", params={"symbol": s})
            m = _metrics(url)
            w0 = _stats(emu)["accepted_weight"]
            time.sleep(3)
            quiet = _stats(emu)["accepted_weight"] - w0 < 60  # the backfill is over
            if m.get('livecandle_order_books{state="in_sync"}', 0) >= len(POLLED) and quiet:
                return
    print("warning: the service was still busy warming up", file=sys.stderr)


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-proxy-") as tmp,
        redis_server(Path(tmp)) as redis_url,
        EmulatorProcess("--history-days", "3", symbols=",".join(SYMBOLS)) as emu,
    ):
        env = {
            "LIVECANDLE_SYMBOLS": ",".join(SYMBOLS),
            "LIVECANDLE_INTERVALS": "1m,1h",
            # a 24 h ticker is answered from Redis when it holds the whole day of 1m
            # candles (the default 1,000 is 16.7 h: every ticker/24hr is then forwarded)
            "LIVECANDLE_BACKFILL_CANDLES": BACKFILL,
            "LIVECANDLE_BINANCE_REST_URL": emu.rest_url,
            "LIVECANDLE_BINANCE_WS_URL": emu.ws_url,
            # every bot comes from 127.0.0.1: the per-address limits are not measured here
            "LIVECANDLE_REQUESTS_PER_IP": "100000",
            "LIVECANDLE_QUEUED_REQUESTS_PER_IP": "100000",
            "LIVECANDLE_CONNECTIONS_PER_IP": "100000",
        }
        with redis.Redis.from_url(redis_url) as r:
            server: dict[str, Any] = r.info("server")
        redis_pid = int(server["process_id"])
        with service(redis_url, "all", env, timeout_s=120) as svc:
            _warm(svc.url, emu)
            rows.append(_window(emu, svc.url, svc.pid, redis_pid, 0, MEASURE_S))
            for n in CLIENTS:
                rows.append(_window(emu, svc.url, svc.pid, redis_pid, n, MEASURE_S))
    base = rows[0]["upstream_weight_per_min"]
    for r in rows:
        if r.get("req_per_s"):  # above the service's own work (the window with no bot)
            extra = max(0.0, r["cpu_service"] - rows[0]["cpu_service"])
            r["service_cpu_ms_per_request_above_idle"] = round(extra * 1000 / r["req_per_s"], 2)
        r["note"] = (
            "no bot: the service's own upstream use"
            if r["clients"] == 0
            else f"goal: weight/min flat ({r['upstream_weight_per_min'] - base:+,} vs no bot), "
            "0 upstream 429"
        )
    return rows
