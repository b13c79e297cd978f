"""Benchmark 6: fan-out. 1,000 socket.io clients (websocket transport, one separate
process speaking the Engine.IO 4 / Socket.IO 5 protocol directly, so that the clients'
own cost stays small) over 10 rooms; a publisher (another process) sends 20 updates/s per
room through Redis, as the live writer does. Each client measures receive time - publish
time; the service's CPU is read from /proc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import pid_cpu_seconds, redis_server, service

CLIENTS = int(os.environ.get("BENCH_FANOUT_CLIENTS", "1000"))
ROOMS = 10
RATE = 20  # updates per second per room
SYMBOLS = [f"R{i:02d}USDT" for i in range(ROOMS)]
SECONDS = 10.0

CLIENTS_SCRIPT = r"""
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


def run() -> list[dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-fanout-") as tmp,
        redis_server(Path(tmp)) as url,
    ):
        env = {"LIVECANDLE_SYMBOLS": ",".join(SYMBOLS), "LIVECANDLE_INTERVALS": "1m"}
        clients = pub = None
        with service(url, "web", env) as svc:
            try:
                ws_url = svc.url.replace("http://", "ws://") + (
                    "/socket.io/?EIO=4&transport=websocket"
                )
                clients = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        CLIENTS_SCRIPT,
                        ws_url,
                        ",".join(SYMBOLS),
                        str(CLIENTS),
                        str(SECONDS),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert clients.stdout is not None and clients.stdin is not None
                started = time.monotonic()
                if clients.stdout.readline().strip() != "ready":
                    raise RuntimeError("the clients did not connect")
                connect_s = time.monotonic() - started
                pub = subprocess.Popen(
                    [sys.executable, "-c", PUBLISHER, url, ",".join(SYMBOLS), str(RATE)]
                )
                clients.stdin.write("go\n")
                clients.stdin.flush()
                time.sleep(2)
                c0, t0 = pid_cpu_seconds(svc.pid), time.monotonic()
                result = json.loads(clients.stdout.readline())
                cpu = (pid_cpu_seconds(svc.pid) - c0) / (time.monotonic() - t0)
            finally:
                for p in (pub, clients):
                    if p is not None:
                        p.terminate()
                        p.wait(timeout=20)
    expected = CLIENTS * RATE * SECONDS
    return [
        {
            "bench": "fanout",
            "name": f"{CLIENTS} clients, {ROOMS} rooms, {RATE}/s per room",
            "p50_ms": result["p50"],
            "p99_ms": result["p99"],
            "delivered": result["events"] / expected,
            "cpu_service": cpu,
            "note": f"clients connected in {connect_s:.1f} s; client process CPU "
            f"{result['cpu_clients']:.2f}; goal p99 <= 250 ms",
        }
    ]
