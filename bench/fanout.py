"""Benchmark 6: fan-out. 1,000 socket.io clients (websocket transport) over 10 rooms; a
publisher (another process) sends 20 updates/s per room through Redis, as the live writer
does. Each client measures receive time - publish time; the CPU of the service, the
clients, the publisher and the whole machine is read from /proc.

The clients run in one process (``bench/fanout_clients.py``: bare asyncio protocols on
uvloop, about 10x cheaper per message than the ``websockets`` library); with
``BENCH_FANOUT_CLIENT=websockets`` the older client (``websockets`` + a JSON decode per
message) runs instead, to show what it costs. ``BENCH_FANOUT_COMPARE=REV`` also runs the
service of git revision REV (its ``livecandle`` package, ``git archive``d) against the same
clients, alternating, ``BENCH_FANOUT_ROUNDS`` rounds each (default 1; medians).
``BENCH_FANOUT_PROFILE=FILE`` records the service with py-spy while it is measured (raw
collapsed stacks, one file per run: FILE.0, FILE.1, ...).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, pid_cpu_seconds, redis_server, service

CLIENTS = int(os.environ.get("BENCH_FANOUT_CLIENTS", "1000"))
ROOMS = 10
RATE = 20  # updates per second per room
SYMBOLS = [f"R{i:02d}USDT" for i in range(ROOMS)]
SECONDS = 10.0
ROUNDS = int(os.environ.get("BENCH_FANOUT_ROUNDS", "1"))
COMPARE = os.environ.get("BENCH_FANOUT_COMPARE", "")
CLIENT = os.environ.get("BENCH_FANOUT_CLIENT", "raw")
PROFILE = os.environ.get("BENCH_FANOUT_PROFILE", "")  # py-spy raw output of the service

# the client of earlier runs (BENCH_FANOUT_CLIENT=websockets)
WEBSOCKETS_CLIENTS = r"""
import asyncio, json, sys, time
import msgspec, websockets
url, symbols, n, seconds = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4])
lat, ready = [], []
measuring = False
dec = msgspec.json.Decoder()
async def client(i):
    sym = symbols[i % len(symbols)]
    async with websockets.connect(url, max_queue=None, ping_interval=None) as ws:
        await ws.recv()                      # 0{"sid":...}: engine.io open
        await ws.send("40")                  # socket.io connect, default namespace
        while not (await ws.recv()).startswith("40"):
            pass
        await ws.send('421' + json.dumps(["subscribe", {"symbol": sym, "interval": "1m"}]))
        ready.append(i)
        async for m in ws:
            if m == "2":                     # engine.io ping
                await ws.send("3")
            elif m.startswith("42") and measuring:
                name, data = dec.decode(m[2:])
                if name == "live_candle":
                    lat.append(time.time() * 1000 - data["candle"]["updated_ms"])
async def main():
    global measuring
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    while len(ready) < n:
        await asyncio.sleep(0.1)
    print("ready", flush=True)
    sys.stdin.readline()                     # the publisher has started
    await asyncio.sleep(2)
    measuring = True
    c0 = time.process_time()
    await asyncio.sleep(seconds)
    measuring = False
    cpu = (time.process_time() - c0) / seconds
    for t in tasks:
        t.cancel()
    lat.sort()
    k = len(lat)
    print(json.dumps({"events": k, "p50": lat[k // 2] if k else None,
                      "p99": lat[int(k * 0.99)] if k else None, "cpu_clients": cpu}), flush=True)
asyncio.run(main())
"""

PUBLISHER = r"""
import sys, time
import msgspec, redis
r = redis.Redis.from_url(sys.argv[1])
symbols, rate = sys.argv[2].split(","), float(sys.argv[3])
enc = msgspec.json.Encoder()
next_t = time.monotonic()
while True:
    now = int(time.time() * 1000)
    candles = [{"symbol": s, "interval": "1m", "time": now // 60000 * 60000, "open": "1.00000000",
                "high": "1.00000000", "low": "1.00000000", "close": "1.00000000",
                "source": "live", "updated_ms": now, "previous": None} for s in symbols]
    r.publish("live_updates", enc.encode({"time": now, "prices": [], "candles": candles}))
    next_t += 1 / rate
    time.sleep(max(0.0, next_t - time.monotonic()))
"""


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every process, every core)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_once(redis_url: str, cwd: Path) -> dict[str, Any]:
    """One measurement: a service started from ``cwd``, the clients, the publisher."""
    env = {"LIVECANDLE_SYMBOLS": ",".join(SYMBOLS), "LIVECANDLE_INTERVALS": "1m"}
    clients = pub = None
    with service(redis_url, "web", env, cwd=cwd) as svc:
        try:
            ws_url = svc.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
            program = (
                ["-c", WEBSOCKETS_CLIENTS]
                if CLIENT == "websockets"
                else ["-m", "bench.fanout_clients"]
            )
            clients = subprocess.Popen(
                [sys.executable, *program, ws_url, ",".join(SYMBOLS), str(CLIENTS), str(SECONDS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            assert clients.stdout is not None and clients.stdin is not None
            started = time.monotonic()
            if clients.stdout.readline().strip() != "ready":
                raise RuntimeError("the clients did not connect")
            connect_s = time.monotonic() - started
            pub = subprocess.Popen(
                [sys.executable, "-c", PUBLISHER, redis_url, ",".join(SYMBOLS), str(RATE)]
            )
            clients.stdin.write("go\n")
            clients.stdin.flush()
            time.sleep(2)
            spy = None
            if PROFILE:
                run_no = len(list(Path(PROFILE).parent.glob(Path(PROFILE).name + ".*")))
                spy = subprocess.Popen(
                    [
                        *(str(Path(sys.executable).parent / "py-spy"), "record"),
                        *("-p", str(svc.pid), "-d", str(int(SECONDS)), "-r", "200"),
                        *("-f", "raw", "-o", f"{PROFILE}.{run_no}"),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            c0, p0, m0, t0 = (
                pid_cpu_seconds(svc.pid),
                pid_cpu_seconds(pub.pid),
                machine_busy_s(),
                time.monotonic(),
            )
            result = json.loads(clients.stdout.readline())
            elapsed = time.monotonic() - t0
            result["cpu_service"] = (pid_cpu_seconds(svc.pid) - c0) / elapsed
            result["cpu_publisher"] = (pid_cpu_seconds(pub.pid) - p0) / elapsed
            result["cpu_machine"] = (machine_busy_s() - m0) / elapsed
            result["connect_s"] = connect_s
            if spy is not None:
                spy.wait(timeout=30)
        finally:
            for p in (pub, clients):
                if p is not None:
                    p.terminate()
                    p.wait(timeout=20)
    result["delivered"] = result["events"] / (CLIENTS * RATE * SECONDS)
    # the service's CPU per delivered update: its cost, whatever share of the machine it got
    result["us_per_update"] = (
        result["cpu_service"] * SECONDS / result["events"] * 1e6 if result["events"] else None
    )
    return result


def row(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    def median(k: str) -> Any:
        values = [r[k] for r in results if r.get(k) is not None]
        return statistics.median(values) if values else None

    return {
        "bench": "fanout",
        "name": name,
        "p50_ms": median("p50"),
        "p99_ms": median("p99"),
        "delivered": median("delivered"),
        "cpu_service": median("cpu_service"),
        "cpu_clients": median("cpu_clients"),
        "cpu_machine": median("cpu_machine"),
        "us_per_update": median("us_per_update"),
        "note": f"{len(results)} round(s), medians; clients connected in "
        f"{median('connect_s'):.1f} s; {CLIENT} client; publisher CPU "
        f"{median('cpu_publisher'):.2f}; cpu_machine: busy cores of {os.cpu_count()} "
        "(every process); us_per_update: service CPU per delivered update; "
        "goal >= 95% delivered, p99 <= 250 ms",
    }


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="lc-bench-fanout-") as tmp:
        variants = {f"{CLIENTS} clients, {ROOMS} rooms, {RATE}/s per room": ROOT}
        if COMPARE:
            old = Path(tmp) / "compare"
            old.mkdir()
            archive = subprocess.run(
                ["git", "archive", COMPARE, "livecandle"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            variants[f"the same, service of {COMPARE}"] = old
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        with redis_server(Path(tmp)) as url:
            for _ in range(ROUNDS):
                for name, cwd in variants.items():
                    results[name].append(run_once(url, cwd))
    return [row(name, rs) for name, rs in results.items()]
