"""Shared pieces of the benchmarks: a redis-server, the service in a child process, wrk."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from livecandle.runtime.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
MIN = 60_000


def btc_row(open_ms: int) -> bytes:
    """A 1m BTCUSDT kline as Binance sends it (a real row's field widths: 170 bytes)."""
    return msgspec.json.encode(
        [
            open_ms,
            "60685.22000000",
            "60729.84000000",
            "60670.90000000",
            "60719.27000000",
            "21.63272000",
            open_ms + MIN - 1,
            "1313200.01340410",
            617,
            "12.28492000",
            "745719.41022840",
            "0",
        ]
    )


@contextlib.contextmanager
def redis_server(tmp: Path, tcp: bool = True) -> Iterator[str]:
    """A redis-server without persistence: its URL (``unix://`` when not ``tcp``: on one
    machine a Unix socket costs Redis ~27 % less CPU a command than TCP loopback,
    redis-benchmark SET with 20 clients)."""
    server = RedisServer(tmp / "redis", persist=False, tcp=tcp)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass(frozen=True)
class Child:
    """A running service: its base URL and process id (for CPU and RSS figures)."""

    url: str
    pid: int


@contextlib.contextmanager
def service(
    redis_url: str,
    role: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
    cwd: Path = ROOT,
) -> Iterator[Child]:
    """``livecandle serve --role ROLE`` in a child process, once it answers HTTP; ``cwd``:
    the directory holding the ``livecandle`` package to run (another commit's, to compare)."""
    port = free_port()
    full_env = dict(
        os.environ,
        LIVECANDLE_REDIS_URL=redis_url,
        LIVECANDLE_PORT=str(port),
        PYTHONUNBUFFERED="1",
        **(env or {}),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "livecandle", "serve", "--role", role],
        env=full_env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/api/symbols", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the service did not start")
        yield Child(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(
    url: str,
    connections: int = 50,
    seconds: int = 10,
    threads: int = 2,
    script: Path | None = None,
) -> dict[str, float]:
    """req/s and latency percentiles (ms) from wrk (Debian's package); ``script``: a wrk
    Lua script that makes the requests."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (make bench installs it with apt as root)")
    lua = ["-s", str(script)] if script is not None else []
    out = subprocess.run(
        [exe, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *lua, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "req_per_s": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def exchange_offset_ms(rest_url: str, samples: int = 15) -> int:
    """The exchange clock minus this machine's, in ms: of ``samples`` asks of
    ``/api/v3/time``, the quickest round trip's, against its midpoint (NTP's rule: a
    busy server's slow answer would otherwise put the error of its delay into every
    latency measured with the offset)."""
    best: tuple[float, int] | None = None
    with httpx.Client(timeout=30) as client:
        for _ in range(samples):
            t0 = time.time()
            server_ms = client.get(rest_url + "/api/v3/time").json()["serverTime"]
            t1 = time.time()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, round(server_ms - (t0 + t1) * 500))
    assert best is not None
    return best[1]
