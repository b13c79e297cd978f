"""A real ``livecandle serve --role web`` process for attacks (its RSS, its log), an
attacker's address beside the normal client's, and a normal client that keeps reading
``/api/klines`` and receiving live updates while an attack runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import redis.asyncio as aioredis

from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from tests.builders import kline_member

# every 127.x.y.z is this machine: the attacker connects from its own address, so the
# per-address limits it meets are not the normal client's (127.0.0.1)
ATTACKER = "127.0.0.2"
MIN = 60_000
T0 = 1_700_000_040_000
CANDLES = 1000


@dataclass
class WebProcess:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlsplit(self.url)
        assert u.hostname is not None and u.port is not None
        return u.hostname, u.port

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def web_process(
    redis_url: str, tmp_path: Path, args: tuple[str, ...] = (), **env_extra: str
) -> Iterator[WebProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECANDLE_")}
    env.update(
        LIVECANDLE_REDIS_URL=redis_url,
        LIVECANDLE_BINANCE_REST_URL="http://127.0.0.1:9",  # the web role asks nothing
        LIVECANDLE_BINANCE_WS_URL="ws://127.0.0.1:9",
        LIVECANDLE_PORT="0",
        LIVECANDLE_SYMBOLS="BTCUSDT,ETHUSDT",
        LIVECANDLE_INTERVALS="1m,5m,1h",
        **env_extra,
    )
    log = tmp_path / "web.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livecandle", *args, "serve", "--role", "web"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "livecandle: open http://... in a browser"
        assert "http://" in line, (line, log.read_text())
        yield WebProcess(line.split("open ", 1)[1].split()[0], proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


async def fill(redis: aioredis.Redis) -> None:
    """1,000 official BTCUSDT 1m candles: the normal client's read is a full one."""
    rows = [(T0 + i * MIN, kline_member(T0 + i * MIN)) for i in range(CANDLES)]
    await Store(redis).write_candles(SeriesKey.of("BTCUSDT", "1m"), rows, 1)


@dataclass
class Normal:
    """What the normal client saw: read latencies (s) and statuses, live update times."""

    read_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    updates_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        gaps = [b - a for a, b in zip(self.updates_s, self.updates_s[1:], strict=False)]
        reads = sorted(self.read_s)
        return {
            "reads": len(reads),
            "read_p50_ms": round(statistics.median(reads) * 1000, 1) if reads else None,
            "read_max_ms": round(reads[-1] * 1000, 1) if reads else None,
            "non_200": sum(s != 200 for s in self.statuses),
            "live_updates": len(self.updates_s),
            "live_max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        }

    def assert_served(self, read_max_s: float = 2.0, gap_max_s: float = 2.0) -> None:
        """Every read answered 200 within ``read_max_s``; live updates kept coming, never
        more than ``gap_max_s`` apart (generous bounds: the machine is shared; the
        figures themselves are printed by the tests: pytest -s)."""
        s = self.summary()
        assert s["reads"] >= 3 and s["non_200"] == 0, s
        assert max(self.read_s) < read_max_s, s
        assert s["live_updates"] >= 5, s
        assert s["live_max_gap_ms"] is not None and s["live_max_gap_ms"] < gap_max_s * 1000, s


@contextlib.asynccontextmanager
async def normal_client(web: WebProcess, redis: aioredis.Redis) -> AsyncIterator[Normal]:
    """The normal client in a process of its own (so the attack's own CPU in this one
    does not count as the server's latency): reads ``/api/klines`` every 50 ms and
    receives BTCUSDT 1m live updates (published all along) until the block ends."""
    seen = Normal()
    kw = redis.connection_pool.connection_kwargs
    redis_url = f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.normal_client",
        web.url,
        redis_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).strip() == b"ready"
        yield seen
    finally:
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
            await proc.wait()
        got = msgspec.json.decode(line)
        seen.read_s, seen.statuses, seen.updates_s = (
            got["read_s"],
            got["statuses"],
            got["updates_s"],
        )


def attacker_http(url: str, timeout: float = 30, keep_alive: bool = True) -> httpx.AsyncClient:
    # idle connections expire before the server's header deadline (2 s in the tests)
    limits = httpx.Limits(
        max_connections=1000,
        max_keepalive_connections=1000 if keep_alive else 0,
        keepalive_expiry=1,
    )
    transport = httpx.AsyncHTTPTransport(local_address=ATTACKER, limits=limits)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout)


async def attacker_tcp(web: WebProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = web.host_port
    return await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
