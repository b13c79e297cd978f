"""The Redis client's limits against a real redis-server of the test's own: a paused
server (SIGSTOP) fails reads within the timeout, a burst of reads stays inside the pool,
an idle subscription outlives the socket timeout, and the health ping measures Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from livecandle.domain.model import SeriesKey
from livecandle.runtime.redis_server import RedisServer
from livecandle.store import Store, connect
from tests.builders import kline_member
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service
from tests.integration.redis_support import client, full, own_server, paused

S = SeriesKey.of("BTCUSDT", "1m")
T0 = 1_700_000_040_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with own_server(tmp_path) as s:
        yield s


async def connected_clients(url: str) -> int:
    """Connections the server has open, not counting the one asking."""
    async with client(url) as observer:
        info = await observer.info("clients")
    return int(info["connected_clients"]) - 1


async def test_a_read_fails_within_the_timeout_while_redis_is_paused_and_works_after(
    server: RedisServer,
) -> None:
    async with client(server.url, timeout_s=0.5) as c:
        store = Store(c)
        await store.write_candles(S, [(T0, kline_member(T0))], 1)
        with paused(server):
            started_s = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                await store.meta(S)
            assert time.monotonic() - started_s < 1.5  # the timeout, not the pause's end
            with pytest.raises(redis.exceptions.TimeoutError):
                await store.ping_ms()  # /healthz sees it too
            await asyncio.sleep(1.0)  # the pause outlasts the timeout
        assert (await store.meta(S)).latest == T0


async def test_many_concurrent_reads_never_open_more_than_max_connections(
    server: RedisServer,
) -> None:
    async with client(server.url, max_connections=4) as c:
        store = Store(c)
        await store.write_candles(S, [(T0, kline_member(T0))], 1)
        metas = await asyncio.gather(*(store.meta(S) for _ in range(300)))
        assert {m.latest for m in metas} == {T0}
        assert await connected_clients(server.url) <= 4  # an unbounded pool opened ~300


async def test_a_full_pool_gives_up_after_the_timeout(server: RedisServer) -> None:
    async with client(server.url, max_connections=2, timeout_s=0.5) as c:
        store = Store(c)
        with paused(server):
            reads = [asyncio.ensure_future(store.meta(S)) for _ in range(20)]
            started_s = time.monotonic()
            results = await asyncio.gather(*reads, return_exceptions=True)
        assert time.monotonic() - started_s < 1.5
        assert all(isinstance(r, redis.exceptions.RedisError) for r in results), results
        assert await connected_clients(server.url) <= 2


async def test_an_idle_subscription_outlives_the_socket_timeout(server: RedisServer) -> None:
    async with client(server.url, timeout_s=0.3) as c:
        store = Store(c)
        subscribed = asyncio.Event()
        received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def listen() -> None:
            async for item in store.listen("news", subscribed=subscribed.set):
                received.put_nowait(item)

        task = asyncio.create_task(listen())
        try:
            async with asyncio.timeout(5):
                await subscribed.wait()
            await asyncio.sleep(1.0)  # silence: three socket timeouts long
            assert not task.done(), task
            await c.publish("news", b"still here")
            async with asyncio.timeout(5):
                assert await received.get() == ("news", b"still here")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("made_by", ["connect", "redis-py"])
async def test_the_health_ping_measures_redis_not_a_blocked_event_loop(
    redis_url: str, made_by: str
) -> None:
    made = connect(redis_url) if made_by == "connect" else aioredis.Redis.from_url(redis_url)
    async with made as c:
        store = Store(c)
        pinging = asyncio.ensure_future(store.ping_ms())
        await asyncio.sleep(0)  # the probe is on its way, in its own thread
        time.sleep(1.0)  # noqa: ASYNC251 - the event loop is busy (a flood of requests)
        assert await pinging < 500


@pytest.mark.parametrize("command", ["get", "pipeline"])
async def test_a_task_cancelled_mid_command_stops(redis_url: str, command: str) -> None:
    """With a socket timeout redis-py sends under asyncio.wait_for, which on Python 3.11
    swallows a cancel arriving as the send completes: the task ran on forever."""
    async with client(redis_url) as c:

        async def worker() -> None:
            while True:
                if command == "get":
                    await c.get("x")
                else:
                    await c.pipeline(transaction=False).set("x", b"1").publish("y", b"1").execute()

        for i in range(150):
            task = asyncio.create_task(worker())
            await asyncio.sleep(0.001 * (i % 7))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done and task.cancelled(), f"the cancelled task kept running (round {i})"


async def test_a_paused_redis_is_a_503_within_the_timeout_and_the_service_recovers(
    server: RedisServer, emulator: EmulatorProcess
) -> None:
    q = {"symbol": "BTCUSDT", "interval": "1m"}
    async with (
        running_service(
            server.url, emulator, "1m", roles=("web",), port=0, redis_timeout_s=1.0
        ) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=30) as web,
    ):
        assert (await web.get("/api/klines", params=q)).status_code == 200
        with paused(server):
            started_s = time.monotonic()
            r = await web.get("/api/klines", params=q)
            assert r.status_code == 503 and "Redis is unreachable" in r.json()["error"]
            assert time.monotonic() - started_s < 2.5
            h = await web.get("/healthz")
            assert h.status_code == 503 and h.json()["redis"]["ok"] is False
        assert (await web.get("/api/klines", params=q)).status_code == 200
        h = await web.get("/healthz")
        assert h.status_code == 200 and h.json()["redis"]["ok"] is True


async def test_healthz_reports_a_full_redis_refusing_writes_and_its_recovery(
    server: RedisServer, emulator: EmulatorProcess
) -> None:
    async def health(web: httpx.AsyncClient) -> dict[str, Any]:
        body: dict[str, Any] = (await web.get("/healthz")).json()
        return body

    # full from the start: the fetcher's backfill is refused too, not only live writes
    roles = ("fetcher", "stream", "web")
    async with (
        client(server.url) as c,
        full(c),
        running_service(server.url, emulator, "1m", roles=roles) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=30) as web,
    ):
        async with asyncio.timeout(20):
            while None in (body := await health(web))["storage"].values():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert body["status"] == "degraded"
        assert body["redis"]["ok"] is True  # it answers PING, it refuses writes
        assert "maxmemory" in body["storage"]["writer"]
        assert "maxmemory" in body["storage"]["fetcher"]
        for name, task in body["tasks"].items():
            if name.startswith(("fetch:", "stream:")):
                assert task["restarts"] == 0, (name, task)
        await c.config_set("maxmemory", "0")  # room again
        async with asyncio.timeout(30):
            while (await health(web))["storage"]["error"] is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.2)


async def test_health_checks_in_a_burst_share_one_probe_connection(server: RedisServer) -> None:
    async with client(server.url) as c:
        store = Store(c)
        before = int((await c.info("stats"))["total_connections_received"])
        for _ in range(50):  # an unauthenticated /healthz flood
            assert await store.ping_ms() >= 0
        opened = int((await c.info("stats"))["total_connections_received"]) - before
        assert opened <= 2  # one probe (a second if the burst crossed its second)
