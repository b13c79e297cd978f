"""livecandle on a real Redis Cluster of three masters with a replica each (issue 10 item
5, issue 13 item 3): every Store method with series in different slots, the whole service
(history, live candles, socket.io, ``verify``), and a master killed with ``kill -9`` under
live 1s candles: a replica is promoted, ``/healthz`` tells it, the service recovers
without a restart and no official row acknowledged before the kill is lost; the killed
master restarted rejoins as a replica."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
import redis.exceptions
import socketio

from livecandle.domain.model import SeriesKey
from livecandle.domain.universe import SymbolEntry
from livecandle.official.integrity import verify
from livecandle.runtime.service import Service
from livecandle.store import ClosedLive, Keys, LiveWrite, Store, connect
from livecandle.store.cluster import REPLICA_WAIT_MS, SILENT_NODE_S
from livecandle.store.codec import live_row
from livecandle.store.store import LISTEN_POLL_S, OfficialWrite
from tests.builders import kline_member
from tests.helpers import EmulatorProcess
from tests.integration.cluster_support import Cluster, Node, cluster, poll, redis_cli
from tests.integration.live_support import LiveRecorder, official, running_service
from tests.integration.test_cli import env_for, run
from tests.integration.test_redis_trouble import health, not_crash_looping, now_ms, until

T0 = 1_700_000_040_000  # a minute boundary
SYMBOLS = ["BTCUSDT", "ETHUSDT"]  # the session emulator's
# 1s, 1m and 3m: the series' slots are on each of the three masters
SERIES = [SeriesKey.of(s, i) for s in SYMBOLS for i in ("1s", "1m", "3m")]
SECONDS = [s for s in SERIES if s.interval.name == "1s"]


@pytest.fixture
def three_masters(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path / "cluster") as c:
        yield c


@contextlib.asynccontextmanager
async def cluster_store(url: str) -> AsyncIterator[Store]:
    client = connect(url, cluster=True, timeout_s=2.0)
    try:
        yield Store(client, Keys(cluster=True))
    finally:
        await client.aclose()
        await asyncio.sleep(0)


def masters_holding(c: Cluster, series: list[SeriesKey]) -> set[int]:
    keys = Keys(cluster=True)
    return {c.master_of(keys.klines(s)).port for s in series}


async def test_every_store_method_works_on_three_masters_and_after_a_failover(
    three_masters: Cluster,
) -> None:
    many = [SeriesKey.of(f"S{n}USDT", "1m") for n in range(40)]
    assert len(masters_holding(three_masters, many)) == 3  # every master holds series
    async with cluster_store(three_masters.url) as store:
        heard: list[tuple[str, bytes]] = []
        listening, more = asyncio.Event(), asyncio.Event()

        async def listen() -> None:
            async for channel, data in store.listen(
                "live_updates", "klines_updated", subscribed=listening.set
            ):
                heard.append((channel, data))
                more.set()

        listener = asyncio.create_task(listen())
        try:
            await asyncio.wait_for(listening.wait(), 10)

            async def write_all(n: int) -> None:
                opens = T0 + n * 60_000
                res = await store.write_officials(
                    [OfficialWrite(s, [(opens, kline_member(opens))]) for s in many], n
                )
                assert [r.added + r.unchanged for r in res] == [1] * len(many)
                await store.write_live(
                    [LiveWrite(s, b'{"n":%d}' % n) for s in many],
                    prices=[(s.symbol, b"%d" % n) for s in many],
                    publish=b"batch%d" % n,
                    closed=[b"closed"],
                    closed_candles=[ClosedLive(s, opens + 60_000, b"{}") for s in many],
                )

            await write_all(0)
            one = many[0]
            res = await store.write_candles(
                one, [(T0 + 60_000, kline_member(T0 + 60_000))], 1, [(T0 - 120_000, T0 - 60_000)]
            )
            assert (res.added, res.count) == (1, 2)
            assert await store.present_opens([(s, T0 - 1, T0) for s in many]) == [[T0]] * 40
            assert (await store.gaps_between([(one, 0, T0)]))[0] == [(T0 - 120_000, T0 - 60_000)]
            assert await store.gaps(one) == [(T0 - 120_000, T0 - 60_000)]
            assert await store.remove_members(one, [kline_member(T0 + 60_000)], 2) == 1
            await store.set_error(one, "boom")
            assert (await store.meta(one)).last_error == "boom"
            await store.set_error(one, None)
            read = await store.read_chart(many[5])
            assert read.members == [kline_member(T0)] and read.live == b'{"n":0}'
            assert read.closed == [b"{}"]
            assert await store.members(many[7]) == [(kline_member(T0), float(T0))]
            assert await store.count(many[9]) == 1
            assert set(await store.stored_series()) == set(many)
            assert await store.live_prices([s.symbol for s in many]) == [b"0"] * 40
            assert await store.live_price(many[3].symbol) == b"0"
            assert await store.members_since(many, T0) == [[kline_member(T0)]] * 40
            await store.set_live_candle(one, b"x")
            assert await store.live_candle(one) == b"x"
            await store.beat("stream", {"ok": True}, 10_000)
            assert await store.heartbeat("stream") == {"ok": True}
            entry = SymbolEntry("BTCUSDT", "TRADING", 1, True, True, "BTC", "USDT", "0.01")
            await store.write_universe([entry])
            assert (await store.universe())["BTCUSDT"] == entry
            assert await store.ping_ms() >= 0
            async with asyncio.timeout(5):
                while (b"batch0" not in [d for _, d in heard]) or not any(
                    c == "klines_updated" for c, _ in heard
                ):
                    more.clear()
                    await more.wait()

            # a master dies: its replica is promoted without the scripts loaded (the script
            # cache is not replicated) and with every write acknowledged before
            dead = three_masters.kill_master(Keys(cluster=True).klines(many[0]))
            three_masters.wait_failover(dead)
            async with asyncio.timeout(20):
                while True:
                    try:
                        await write_all(1)
                        break
                    except redis.exceptions.RedisError:  # it finds the new master after one
                        await asyncio.sleep(0.1)
            assert (
                await store.present_opens([(s, T0 - 1, T0 + 60_000) for s in many])
                == [[T0, T0 + 60_000]] * 40
            )
            three_masters.restart(dead)
            assert dead in three_masters.replicas_now()
            await write_all(2)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


def client_connections(node: Node) -> int:
    """Connections of clients (not replication links, not this question's own) that
    ``node`` holds open."""
    lines = redis_cli(node.port, "client", "list").splitlines()
    return sum(1 for line in lines if "flags=N " in line and "cmd=client|list" not in line)


async def test_after_a_failover_the_client_routes_by_the_nodes_it_closes_and_knows_the_new_masters(
    three_masters: Cluster,
) -> None:
    """A topology refresh must route by the nodes the client keeps: those it closes and
    reports. redis-py 7.4 routed by fresh node objects (with pools of their own, never
    closed) and kept the old roles (a promoted replica was no primary)."""
    many = [SeriesKey.of(f"S{n}USDT", "1m") for n in range(40)]
    assert len(masters_holding(three_masters, many)) == 3
    client = connect(three_masters.url, cluster=True, timeout_s=2.0)
    store = Store(client, Keys(cluster=True))
    try:
        await store.present_opens([(s, 0, T0) for s in many])  # a connection to each master
        dead = three_masters.kill_master(Keys(cluster=True).klines(many[0]))
        three_masters.wait_failover(dead)
        async with asyncio.timeout(20):
            while True:
                try:
                    await store.present_opens([(s, 0, T0) for s in many])
                    break
                except redis.exceptions.RedisError:  # it finds the new master after one
                    await asyncio.sleep(0.1)
        masters = sorted(f"127.0.0.1:{n.port}" for n in three_masters.masters_now())
        assert sorted(n.name for n in client.get_primaries()) == masters
        assert client.get_default_node().name in masters
    finally:
        await client.aclose()
    for node in three_masters.running():
        poll(lambda n=node: client_connections(n) == 0, 5, f"port {node.port} left open")


async def test_an_official_write_is_answered_once_the_masters_replica_has_it(
    three_masters: Cluster,
) -> None:
    """A failover promotes the replica: what it had not received when its master died is
    lost, so an official write waits for it (WAIT 1); a master left without a replica
    costs one such wait, then its writes go without waiting for a while."""
    series = SeriesKey.of("BTCUSDT", "1m")
    async with cluster_store(three_masters.url) as store:
        await store.write_candles(series, [(T0, kline_member(T0))], 1)
        started = time.monotonic()
        await store.write_candles(series, [(T0 + 60_000, kline_member(T0 + 60_000))], 2)
        assert time.monotonic() - started < 0.4  # the replica answers at once
        master = three_masters.master_of(Keys(cluster=True).klines(series))
        replica = three_masters.replica_of(master)
        replica.pause()
        try:
            started = time.monotonic()
            opens = T0 + 120_000
            await store.write_officials([OfficialWrite(series, [(opens, kline_member(opens))])], 3)
            assert time.monotonic() - started >= REPLICA_WAIT_MS / 1000
            started = time.monotonic()
            opens = T0 + 180_000
            await store.write_candles(series, [(opens, kline_member(opens))], 4)
            assert time.monotonic() - started < 0.4  # no replica: not waited for again
        finally:
            replica.resume()
        store.replication.recheck_s = 0  # asked again: the replica is back
        store.replication.answered([master_name(master)], [1])
        started = time.monotonic()
        await store.write_candles(series, [(T0 + 240_000, kline_member(T0 + 240_000))], 5)
        assert time.monotonic() - started < 0.4
        assert await store.count(series) == 5


def master_name(node: Node) -> str:
    return f"127.0.0.1:{node.port}"


async def test_a_subscription_whose_node_dies_fails_and_the_next_one_hears_every_node(
    three_masters: Cluster,
) -> None:
    """PUBLISH reaches every node of a cluster: a subscription on any node hears writes
    to every master. When its node is killed the subscription raises (the supervisor
    listens again) and the next one subscribes on a node that is up."""
    async with cluster_store(three_masters.url) as store:
        heard: list[bytes] = []
        listening, more = asyncio.Event(), asyncio.Event()

        async def listen() -> None:
            async for _, data in store.listen("live_updates", subscribed=listening.set):
                heard.append(data)
                more.set()

        async def hear(message: bytes, within_s: float) -> None:
            async with asyncio.timeout(within_s):
                while message not in heard:
                    with contextlib.suppress(redis.exceptions.RedisError):
                        await store.write_live([], publish=message)
                    more.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(more.wait(), 0.5)

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(listening.wait(), 10)
        await hear(b"before", 5)
        # PUBSUB NUMSUB counts the node's own subscribers: the one the listener is on
        (doomed,) = [
            n
            for n in three_masters.nodes
            if redis_cli(n.port, "pubsub", "numsub", "live_updates").split()[1] == "1"
        ]
        was_master = doomed in three_masters.masters_now()
        doomed.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(listener, 10)
        if was_master:
            await asyncio.to_thread(three_masters.wait_failover, doomed)
        listening.clear()
        listener = asyncio.create_task(listen())
        try:
            await asyncio.wait_for(listening.wait(), 10)
            await hear(b"after", 20)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def test_a_subscription_whose_node_stops_answering_is_given_up(
    three_masters: Cluster,
) -> None:
    """A stopped node (SIGSTOP) keeps its socket open and sends nothing: without a
    question the subscription would wait forever while the other nodes deliver."""
    async with cluster_store(three_masters.url) as store:
        listening = asyncio.Event()

        async def listen() -> None:
            async for _ in store.listen("live_updates", subscribed=listening.set):
                pass

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(listening.wait(), 10)
        (stopped,) = [
            n
            for n in three_masters.nodes
            if redis_cli(n.port, "pubsub", "numsub", "live_updates").split()[1] == "1"
        ]
        stopped.pause()
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                await asyncio.wait_for(listener, 10)
            assert time.monotonic() - started <= SILENT_NODE_S + 3 * LISTEN_POLL_S
        finally:
            stopped.resume()


# -- the whole service ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service_on(
    c: Cluster, emulator: EmulatorProcess
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, Store]]:
    async with (
        running_service(
            c.url,
            emulator,
            "1s,1m,3m",
            roles=("fetcher", "stream", "web"),
            symbols=",".join(SYMBOLS),
            port=0,
            redis_cluster=True,
            redis_timeout_s=1.0,
        ) as svc,
        httpx.AsyncClient(base_url=str(svc.web_url), timeout=10) as web,
        cluster_store(c.url) as store,
    ):
        yield svc, web, store


async def cli_verify(c: Cluster, emulator: EmulatorProcess) -> str:
    """``livecandle verify`` (every stored series) against the cluster: its output, after
    asserting it found every series and every invariant holding."""
    env = env_for(c.url, emulator) | {"LIVECANDLE_REDIS_CLUSTER": "1"}
    done = await asyncio.to_thread(run, ["verify"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(str(s) in done.stdout for s in SERIES), done.stdout
    return done.stdout


async def caught_up(store: Store) -> bool:
    """Every 1s series' official rows reach the last closed second but two."""
    now = now_ms()
    for s in SECONDS:
        meta = await store.meta(s)
        if meta.latest is None or meta.latest < now // 1000 * 1000 - 3000:
            return False
    return True


async def missing_rows(store: Store) -> dict[str, int]:
    out = {}
    for s in SECONDS:
        meta = await store.meta(s)
        assert meta.latest is not None and meta.earliest is not None
        out[str(s)] = (meta.latest - meta.earliest) // 1000 + 1 - meta.count
    return out


async def test_the_whole_service_runs_on_three_masters(
    three_masters: Cluster, emulator: EmulatorProcess
) -> None:
    assert len(masters_holding(three_masters, SERIES)) == 3
    node = aioredis.Redis(port=three_masters.nodes[1].port)  # PUBLISH reaches every node
    sio = socketio.AsyncClient(reconnection=False)
    candles: list[dict[str, Any]] = []
    got = asyncio.Event()

    @sio.on("live_candle")  # type: ignore[misc]
    async def on_candle(data: dict[str, Any]) -> None:
        candles.append(data)
        got.set()

    try:
        async with (
            service_on(three_masters, emulator) as (svc, web, store),
            LiveRecorder(node) as rec,
        ):
            await until(lambda: caught_up(store), 30)

            async def backfilled() -> bool:  # history on every master (1s is live already)
                return all([(await store.meta(s)).count >= 5 for s in SERIES])

            await until(backfilled, 30)
            await sio.connect(str(svc.web_url), transports=["websocket"])
            assert (await sio.call("subscribe", {"symbol": "ETHUSDT", "interval": "1s"}))["ok"]
            await asyncio.wait_for(got.wait(), 10)
            assert candles[-1]["symbol"] == "ETHUSDT"

            def complete() -> list[tuple[str, str, int]]:
                return sorted(k for k, c in rec.closed.items() if c["complete"])

            await rec.wait_for(lambda: len(complete()) >= 8, 30)
            await until(lambda: caught_up(store), 30)
            for symbol, interval, open_ms in complete()[:8]:
                candle = rec.closed[(symbol, interval, open_ms)]
                assert live_row(candle) == await official(emulator, symbol, interval, open_ms)
            for s in SERIES:  # web reads of every master
                r = await web.get(
                    "/api/klines", params={"symbol": s.symbol, "interval": s.interval.name}
                )
                assert r.status_code == 200 and r.json(), (s, r.text)
            for path in ("/api/tickers", "/api/v3/ticker/price"):  # live prices of two slots
                r = await web.get(path)
                assert r.status_code == 200 and len(r.json()) >= 2, (path, r.text)
            code, body = await health(web)
            assert code == 200 and body["status"] == "ok", body
            report = await verify(store, SERIES, now_ms())
            assert report.ok, report.text()
            assert await missing_rows(store) == {str(s): 0 for s in SECONDS}
        # the command line too, once the service has stopped (while it writes, a candle
        # closing between verify's clock and its read looks "not closed")
        assert "all invariants hold" in await cli_verify(three_masters, emulator)
    finally:
        await sio.disconnect()
        await node.aclose()


async def test_a_killed_master_fails_over_and_rejoins_without_losing_a_row(
    three_masters: Cluster, emulator: EmulatorProcess
) -> None:
    async with service_on(three_masters, emulator) as (_, web, store):
        await until(lambda: caught_up(store), 30)
        victim = SeriesKey.of("BTCUSDT", "1s")
        # every official row acknowledged so far, of every series
        before = {s: await store.members(s) for s in SERIES}
        dead = three_masters.kill_master(Keys(cluster=True).klines(victim))
        killed = time.monotonic()
        statuses: list[tuple[float, int, str]] = []

        async def watch() -> None:
            while True:
                code, body = await health(web)
                statuses.append((time.monotonic() - killed, code, body["status"]))
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        try:

            async def written_again() -> bool:  # the live writer reaches the victim's slot
                with contextlib.suppress(redis.exceptions.RedisError):
                    raw = await store.live_candle(victim)
                    written = raw is not None and msgspec.json.decode(raw)["time"]
                    return bool(written) and written > now_ms() - 1000
                return False

            # both measured from the kill: the promotion, and the first live write after
            failover_s, writes_s = await asyncio.gather(
                asyncio.to_thread(three_masters.wait_failover, dead), until(written_again, 30)
            )
            await until(lambda: caught_up(store), 30)

            async def healthy() -> bool:
                code, body = await health(web)
                return code == 200 and body["status"] == "ok"

            await until(healthy, 30)
            recovered_s = time.monotonic() - killed
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        # /healthz told the truth: not ok while the slots were unserved, ok after
        assert any(status != "ok" for t, _, status in statuses if t < failover_s), statuses
        _, body = await health(web)
        assert not_crash_looping(body) == [], body["tasks"]
        lost = {str(s): len(set(rows) - set(await store.members(s))) for s, rows in before.items()}
        assert lost == {str(s): 0 for s in SERIES}
        assert await missing_rows(store) == {str(s): 0 for s in SECONDS}
        report = await verify(store, SERIES, now_ms())
        assert report.ok, report.text()

        rejoined_s = await asyncio.to_thread(three_masters.restart, dead)
        assert dead in three_masters.replicas_now()
        await until(lambda: caught_up(store), 30)
        code, body = await health(web)
        assert code == 200 and body["status"] == "ok", body
        assert not_crash_looping(body) == [], body["tasks"]
        assert await missing_rows(store) == {str(s): 0 for s in SECONDS}
        report = await verify(store, SERIES, now_ms())
        assert report.ok, report.text()
        print(
            f"master killed: replica promoted in {failover_s:.1f} s, live writes again "
            f"after {writes_s:.1f} s, /healthz ok after {recovered_s:.1f} s, rows lost 0; "
            f"restarted, rejoined as a replica in {rejoined_s:.1f} s"
        )
    await cli_verify(three_masters, emulator)
