"""Redis in trouble under the whole service (fetcher, stream, web) with live 1s candles
(issue 13): paused for 15 s, full (``maxmemory`` + ``noeviction``); restarted with and
without its append-only file in ``test_redis_restart.py``. Throughout, ``/healthz`` tells
the truth; afterwards no task is crash-looping, the official rows are contiguous up to now
(no row lost) and ``verify`` is clean. What ``test_redis_limits.py`` already covers (a
paused Redis is a 503 within the timeout; a full Redis is reported and recovers) is not
repeated here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.exceptions

from livecandle.domain.model import SeriesKey
from livecandle.official.integrity import verify
from livecandle.runtime.service import Service
from livecandle.store import ClosedLive, Store
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service
from tests.integration.redis_support import client, full, own_server, paused

SERIES = [SeriesKey.of("BTCUSDT", "1s"), SeriesKey.of("ETHUSDT", "1s")]
ROLES = ("fetcher", "stream", "web")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def health(web: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    r = await web.get("/healthz")
    body: dict[str, Any] = r.json()
    return r.status_code, body


async def until(check: Callable[[], Any], within_s: float, every_s: float = 0.2) -> float:
    """Seconds until ``await check()`` is true (polled: the service has no event for it)."""
    started = time.monotonic()
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(every_s)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def whole_service(
    url: str, emulator: EmulatorProcess
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, Store]]:
    async with (
        running_service(url, emulator, "1s", roles=ROLES, port=0, redis_timeout_s=1.0) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=10) as web,
        client(url) as c,
    ):
        yield svc, web, Store(c)


async def caught_up(store: Store, now_ms: int) -> bool:
    """Every series' official rows reach the last closed second but two (the fetcher's
    pace) and have no hole."""
    for s in SERIES:
        meta = await store.meta(s)
        if meta.latest is None or meta.latest < now_ms // 1000 * 1000 - 3000:
            return False
    return True


async def contiguous(store: Store) -> dict[str, int]:
    """Rows stored and rows missing between the first and the last, per series."""
    missing = {}
    for s in SERIES:
        meta = await store.meta(s)
        assert meta.latest is not None and meta.earliest is not None
        missing[str(s)] = (meta.latest - meta.earliest) // 1000 + 1 - meta.count
    return missing


def not_crash_looping(body: dict[str, Any]) -> list[str]:
    """Tasks that are not running, or were restarted more than once."""
    return [
        f"{name}: {task}"
        for name, task in body["tasks"].items()
        if task["restarts"] > 1 or task["state"] not in ("running", "done")
    ]


async def test_a_15_s_pause_is_reported_then_recovered_without_a_restart_or_a_lost_row(
    tmp_path: Path, emulator: EmulatorProcess
) -> None:
    with own_server(tmp_path) as server:
        async with whole_service(server.url, emulator) as (_, web, store):
            await until(lambda: caught_up(store, now_ms()), 30)
            statuses: list[tuple[int, str, bool]] = []
            with paused(server):
                paused_at = time.monotonic()
                while time.monotonic() - paused_at < 15:
                    asked = time.monotonic()
                    code, body = await health(web)
                    assert time.monotonic() - asked < 3  # /healthz answers while Redis cannot
                    statuses.append((code, body["status"], body["redis"]["ok"]))
                    await asyncio.sleep(0.5)
            resumed = time.monotonic()
            # the truth while paused: every answer after the first second said "down"
            assert all(s == (503, "down", False) for s in statuses[3:]), statuses
            await until(lambda: caught_up(store, now_ms()), 30)
            code, body = await health(web)
            recovered_s = time.monotonic() - resumed
            assert code == 200 and body["redis"]["ok"], body
            assert not_crash_looping(body) == [], body["tasks"]
            assert await contiguous(store) == {str(s): 0 for s in SERIES}
            report = await verify(store, SERIES, now_ms())
            assert report.ok, report.text()
            print(f"paused 15 s: recovered in {recovered_s:.1f} s, rows lost 0")


async def test_writes_refused_at_maxmemory_are_reported_then_retried_and_no_row_is_lost(
    tmp_path: Path, emulator: EmulatorProcess
) -> None:
    with own_server(tmp_path) as server:
        async with whole_service(server.url, emulator) as (_, web, store), client(server.url) as c:
            await until(lambda: caught_up(store, now_ms()), 30)
            async with full(c):
                # the refusals are reported while Redis still answers PING
                async def refused() -> bool:
                    _, body = await health(web)
                    return bool(body["redis"]["ok"] and "maxmemory" in str(body.get("storage")))

                await until(refused, 15)
                await asyncio.sleep(5)  # five 1s candles close while nothing can be written
            room = time.monotonic()
            await until(lambda: caught_up(store, now_ms()), 30)
            code, body = await health(web)
            recovered_s = time.monotonic() - room
            assert code == 200 and not_crash_looping(body) == [], body["tasks"]
            assert await contiguous(store) == {str(s): 0 for s in SERIES}
            report = await verify(store, SERIES, now_ms())
            assert report.ok, report.text()
            print(f"full ~6 s: rows written again in {recovered_s:.1f} s, rows lost 0")


async def test_a_live_write_failing_while_redis_is_paused_gives_its_connection_back(
    tmp_path: Path,
) -> None:
    """redis-py's pipeline checks its scripts (SCRIPT EXISTS) before its own clean-up
    starts: a failure there left the pipeline holding a pool connection until garbage
    collection (an "Unclosed client session" error logged per failed write)."""
    with own_server(tmp_path) as server:
        async with client(server.url, timeout_s=0.5) as c:
            store = Store(c)
            closed = ClosedLive(SERIES[0], 1_700_000_000_000, b'{"time":1700000000000}')
            await store.write_live([], closed_candles=[closed])  # the script is loaded
            pool = c.connection_pool
            with paused(server), pytest.raises(redis.exceptions.TimeoutError):
                await store.write_live([], closed_candles=[closed])
            assert len(pool._in_use_connections) == 0  # type: ignore[attr-defined]
