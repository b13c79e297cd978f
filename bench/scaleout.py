"""Benchmark 12: scaling out by leases (issue 10) on this machine.

One emulator (``--synthetic 300``, its own process), one redis-server, one ``serve --role
web`` and 1, 2, then 3 ``serve --role stream,fetcher`` workers with ``LIVECANDLE_LEASES=1``
sharing the symbols. Per worker count the market's total rate is stepped
(``BENCH_SCALEOUT_RATES``, default 5k, 10k, 20k, 40k trades/s, set live on the emulator)
and a python-socketio client in its own process, subscribed to the 10 busiest symbols,
measures trade-to-client latency with the exchange clock offset (``exchange_offset_ms``,
as ``fullmarket``); a worker count's steps stop at the first p99 > 100 ms. Reported per
step: p50/p99, events, the CPU of each process (workers summed and the busiest one, web,
emulator, redis, the client) and the load average of the shared machine.

Then the hand-over: with the last worker count (>= 2) at the first rate, ``kill -9`` one
worker; measured are the seconds until every symbol it owned has another owner (the lease
keys) and until a live price of each of its watched symbols, traded after the kill, reaches
the client (the slowest of them). Both include the lease TTL (``BENCH_SCALEOUT_TTL_MS``,
4,000 ms): a killed worker's leases are only free once they expire.

Also ``BENCH_SCALEOUT_WORKERS`` (default ``1,2,3``), ``BENCH_SCALEOUT_SYMBOLS`` (300) and
``BENCH_SCALEOUT_BASELINE`` (``1``: first one worker without leases at the first rate, what
the leases themselves cost).

The machine has 2 cores: the workers, the web node, the emulator, redis and the client
all share them, so a third worker cannot add capacity over two; the rows say so with the
CPU figures rather than hiding it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis as syncredis

from bench.common import ROOT, exchange_offset_ms, pid_cpu_seconds, redis_server, service
from bench.scaleout_clients import CLIENT, WATCHER, after_kill
from livecandle.emulator.process import EmulatorProcess
from livecandle.store import Keys, Store, connect
from livecandle.store.leases import lease_owners

SYMBOLS = int(os.environ.get("BENCH_SCALEOUT_SYMBOLS", "300"))
RATES = [
    int(r) for r in os.environ.get("BENCH_SCALEOUT_RATES", "5000,10000,20000,40000").split(",")
]
WORKERS = [int(n) for n in os.environ.get("BENCH_SCALEOUT_WORKERS", "1,2,3").split(",")]
TTL_MS = int(os.environ.get("BENCH_SCALEOUT_TTL_MS", "4000"))
SETTLE_S = 3.0  # after a rate change: the emulator's new schedule reaches every stream
WARMUP_S = 3.0
MEASURE_S = 10.0
WATCHED = 10
GOAL_MS = 100.0
BASELINE = os.environ.get("BENCH_SCALEOUT_BASELINE", "1") == "1"


def _env(emu: EmulatorProcess) -> dict[str, str]:
    return {
        "LIVECANDLE_SYMBOLS": "*",
        "LIVECANDLE_INTERVALS": "1m,1h",
        "LIVECANDLE_BACKFILL_CANDLES": "3",
        "LIVECANDLE_BINANCE_REST_URL": emu.rest_url,
        "LIVECANDLE_BINANCE_WS_URL": emu.ws_url,
        "LIVECANDLE_LEASES": "1",
        "LIVECANDLE_LEASE_TTL_MS": str(TTL_MS),
    }


@contextlib.contextmanager
def _workers(
    redis_url: str, env: dict[str, str], n: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    full = dict(
        os.environ,
        LIVECANDLE_REDIS_URL=redis_url,
        LIVECANDLE_PORT="0",
        PYTHONUNBUFFERED="1",
        **env,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "livecandle", "serve", "--role", "stream,fetcher"],
            env=full,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _owners(redis_url: str, symbols: list[str]) -> dict[str, str | None]:
    async def get() -> dict[str, str | None]:
        client = connect(redis_url)
        try:
            return await lease_owners(Store(client), symbols)
        finally:
            await client.aclose()

    return asyncio.run(get())


def _universe(redis_url: str) -> list[str]:
    r = syncredis.Redis.from_url(redis_url)
    try:
        names: list[bytes] = r.hkeys(Keys().universe)  # type: ignore[assignment]
        return sorted(k.decode() for k in names)
    finally:
        r.close()


def _redis_pid(redis_url: str) -> int:
    r = syncredis.Redis.from_url(redis_url)
    try:
        info: dict[str, Any] = r.info("server")  # type: ignore[assignment]
        return int(info["process_id"])
    finally:
        r.close()


def _wait_owned(redis_url: str, n: int, timeout_s: float = 120) -> tuple[list[str], float]:
    """Every symbol owned, by ``n`` workers in fair shares; the symbols, the seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        symbols = _universe(redis_url)
        if len(symbols) >= SYMBOLS:
            owners = _owners(redis_url, symbols)
            counts: dict[str | None, int] = {}
            for w in owners.values():
                counts[w] = counts.get(w, 0) + 1
            if (
                None not in counts
                and len(counts) == n
                and max(counts.values()) <= -(-len(symbols) // n)
            ):
                return symbols, time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"{n} workers did not share the symbols within {timeout_s} s")


def _busiest(emu: EmulatorProcess, symbols: list[str], k: int) -> list[str]:
    state = httpx.get(emu.rest_url + "/_emulator/state", timeout=60).json()["symbols"]
    ranked = sorted(symbols, key=lambda s: state.get(s, {}).get("last_agg_id", 0), reverse=True)
    return ranked[:k]


def _set_rate(emu: EmulatorProcess, rate: int) -> None:
    httpx.post(emu.rest_url + "/_emulator/state", json={"total_rate": rate}, timeout=30)


def _hub(emu: EmulatorProcess) -> dict[str, Any]:
    streams: dict[str, Any] = httpx.get(emu.rest_url + "/_emulator/stats", timeout=60).json()[
        "streams"
    ]
    return streams


def _trades(emu: EmulatorProcess) -> int:
    state = httpx.get(emu.rest_url + "/_emulator/state", timeout=60).json()["symbols"]
    return sum(int(v.get("last_agg_id", 0)) for v in state.values())


def one_step(
    emu: EmulatorProcess,
    web: Any,
    workers: list[subprocess.Popen[bytes]],
    redis_pid: int,
    watched: list[str],
    offset_ms: int,
    rate: int,
    set_rate: bool = True,
) -> dict[str, Any]:
    if set_rate:
        _set_rate(emu, rate)
        time.sleep(SETTLE_S)
    assert emu.proc is not None
    pids = {"emulator": emu.proc.pid, "web": web.pid, "redis": redis_pid}
    pids.update({f"worker{i}": w.pid for i, w in enumerate(workers)})
    c0 = {name: pid_cpu_seconds(pid) for name, pid in pids.items()}
    trades0, hub0 = _trades(emu), _hub(emu)
    t0 = time.monotonic()
    client = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            web.url,
            ",".join(watched),
            str(WARMUP_S),
            str(MEASURE_S),
            str(offset_ms),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    cpu = {name: (pid_cpu_seconds(pid) - c0[name]) / elapsed for name, pid in pids.items()}
    made = (_trades(emu) - trades0) / elapsed
    hub = _hub(emu)
    got = json.loads(client.stdout) if client.returncode == 0 else {}
    if client.returncode != 0:
        print(client.stderr[-1500:], file=sys.stderr)
    worker_cpu = [v for k, v in cpu.items() if k.startswith("worker")]
    return {
        "bench": "scaleout",
        "name": f"{len(workers)} worker(s), {rate:,} trades/s",
        "workers": len(workers),
        "rate": rate,
        "made_per_s": round(made),
        "p50_ms": got.get("p50"),
        "p99_ms": got.get("p99"),
        "events": got.get("events"),
        "cpu_workers": round(sum(worker_cpu), 2),
        "cpu_worker_max": round(max(worker_cpu), 2),
        "cpu_web": round(cpu["web"], 2),
        "cpu_emulator": round(cpu["emulator"], 2),
        "cpu_redis": round(cpu["redis"], 2),
        "cpu_client": round(got.get("cpu_client") or 0.0, 2),
        "cpu_total": round(sum(cpu.values()) + (got.get("cpu_client") or 0.0), 2),
        # websocket messages the emulator wrote: below the rate, the emulator (or a
        # connection not read) held the trades back, not the workers
        "emu_sent_per_s": round((hub["sent"] - hub0["sent"]) / elapsed),
        "load1": round(os.getloadavg()[0], 2),
    }


def hand_over(
    redis_url: str,
    emu: EmulatorProcess,
    web: Any,
    workers: list[subprocess.Popen[bytes]],
    symbols: list[str],
    offset_ms: int,
    tmp: Path,
) -> dict[str, Any]:
    """``kill -9`` the first worker: seconds until its symbols are owned again and until
    its watched symbols' live prices traded after the kill reach the client."""
    victim = workers[0]
    owners = _owners(redis_url, symbols)
    its = sorted(s for s, w in owners.items() if w and int(w.split("-")[-2]) == victim.pid)
    watched = _busiest(emu, its, WATCHED)
    out = tmp / "handover.jsonl"
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, web.url, ",".join(watched), str(offset_ms), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None and watcher.stdin is not None
    try:
        while (line := watcher.stdout.readline()) and line.strip() != "ready":
            pass
        time.sleep(2)
        kill_ms = time.time() * 1000 + offset_ms
        kill_s = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        owned_s = None
        while time.monotonic() - kill_s < 60:
            found = _owners(redis_url, its)
            if all(w is not None and int(w.split("-")[-2]) != victim.pid for w in found.values()):
                owned_s = time.monotonic() - kill_s
                break
            time.sleep(0.05)
        # the new owners resume, fill the hole over REST and publish: wait for a live
        # price of every watched symbol traded after the kill (at most 20 s more)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(after_kill(out, kill_ms)) < len(watched):
            time.sleep(0.2)
    finally:
        watcher.communicate(input="", timeout=60)
    first = after_kill(out, kill_ms)
    flowing_s = max(first.values()) / 1000 if len(first) == len(watched) else None
    return {
        "bench": "scaleout",
        "name": f"kill -9 one of {len(workers)} workers (lease TTL {TTL_MS:,} ms)",
        "workers": len(workers),
        "symbols_handed_over": len(its),
        "owned_again_s": None if owned_s is None else round(owned_s, 2),
        "live_again_s": None if flowing_s is None else round(flowing_s, 2),
        "watched_flowing": f"{len(first)}/{len(watched)}",
        "load1": round(os.getloadavg()[0], 2),
    }


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    best: dict[int, int | None] = {}
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-scaleout-") as tmp,
        EmulatorProcess(
            "--synthetic",
            str(SYMBOLS),
            "--total-rate",
            str(RATES[0]),
            "--history-days",
            "1",
            "--no-weight-limits",
            symbols="",
        ) as emu,
    ):
        offset_ms = exchange_offset_ms(emu.rest_url)
        env = _env(emu)
        if BASELINE:  # the same path without leases: what the leases themselves cost
            plain = {**env, "LIVECANDLE_LEASES": "0"}
            with (
                redis_server(Path(tmp) / "plain") as redis_url,
                service(redis_url, "web", plain, timeout_s=120) as web,
                _workers(redis_url, plain, 1) as workers,
            ):
                while len(symbols := _universe(redis_url)) < SYMBOLS:
                    time.sleep(0.5)
                time.sleep(8)  # every stream connected and seeded
                watched = _busiest(emu, symbols, WATCHED)
                row = one_step(
                    emu, web, workers, _redis_pid(redis_url), watched, offset_ms, RATES[0]
                )
                row["name"] = f"1 worker without leases, {RATES[0]:,} trades/s"
                row["workers"] = "1 (no leases)"
                print(f"  {row}", flush=True)
                rows.append(row)
        for n in WORKERS:
            with (
                redis_server(Path(tmp) / f"w{n}") as redis_url,
                service(redis_url, "web", env, timeout_s=120) as web,
                _workers(redis_url, env, n) as workers,
            ):
                _set_rate(emu, RATES[0])
                symbols, took_s = _wait_owned(redis_url, n)
                print(
                    f"  {n} worker(s): {len(symbols)} symbols shared in {took_s:.1f} s", flush=True
                )
                time.sleep(3)  # every stream connected and seeded
                watched = _busiest(emu, symbols, WATCHED)
                redis_pid = _redis_pid(redis_url)
                best[n] = None
                for rate in RATES:
                    ok = False
                    # a shared machine's burst can spoil one window: a step that misses
                    # the goal is measured once more at the same rate (both rows shown)
                    for again in (False, True):
                        row = one_step(
                            emu, web, workers, redis_pid, watched, offset_ms, rate, not again
                        )
                        ok = row["p99_ms"] is not None and row["p99_ms"] <= GOAL_MS
                        row["note"] = ("p99 <= 100 ms" if ok else "p99 > 100 ms") + (
                            " (again)" if again else ""
                        )
                        print(f"  {row}", flush=True)
                        rows.append(row)
                        if ok:
                            break
                    if not ok:
                        break
                    best[n] = rate
                if n == WORKERS[-1] and n >= 2:
                    _set_rate(emu, RATES[0])
                    time.sleep(10)  # an overloaded emulator catches up with its schedule
                    row = hand_over(redis_url, emu, web, workers, symbols, offset_ms, Path(tmp))
                    print(f"  {row}", flush=True)
                    rows.append(row)
    for n, top in best.items():
        rows.append(
            {
                "bench": "scaleout",
                "name": f"capacity, {n} worker(s)",
                "workers": n,
                "rate": top,
                "note": "highest stepped rate with p99 <= 100 ms (2 shared cores)",
            }
        )
    return rows
