"""The store's Lua scripts and reads against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from livecandle.domain.model import SeriesKey
from livecandle.store import ClosedLive, Keys, LiveWrite, Meta, Store, connect
from livecandle.store.store import OfficialWrite, pack_rows
from tests.builders import kline_member
from tests.integration.cluster_support import cluster

S = SeriesKey.of("BTCUSDT", "1m")
T0 = 1_700_000_040_000  # a minute boundary


async def test_write_stores_members_and_meta(store: Store) -> None:
    res = await store.write_candles(
        S, [(T0, kline_member(T0)), (T0 + 60_000, kline_member(T0 + 60_000))], 1
    )
    assert (res.added, res.replaced, res.unchanged, res.latest, res.count) == (
        2,
        0,
        0,
        T0 + 60_000,
        2,
    )
    meta = await store.meta(S)
    assert (meta.earliest, meta.latest, meta.count, meta.updated_ms) == (T0, T0 + 60_000, 2, 1)


async def test_refetching_the_same_official_candle_is_a_no_op(store: Store) -> None:
    await store.write_candles(S, [(T0, kline_member(T0))], 1)
    res = await store.write_candles(S, [(T0, kline_member(T0))], 2)
    assert (res.added, res.replaced, res.unchanged) == (0, 0, 1)
    assert await store.count(S) == 1


async def test_changed_official_row_replaces_the_old_one(store: Store) -> None:
    """ZADD NX would keep both members (NX compares members, not scores)."""
    await store.write_candles(S, [(T0, kline_member(T0, close="100.00000000"))], 1)
    res = await store.write_candles(S, [(T0, kline_member(T0, close="100.50000000"))], 2)
    assert (res.added, res.replaced) == (0, 1)
    members = await store.members(S)
    assert members == [(kline_member(T0, close="100.50000000"), float(T0))]


async def test_zadd_nx_would_duplicate_a_score_the_script_does_not(
    store: Store, redis: aioredis.Redis
) -> None:
    key = store.keys.klines(S)
    await redis.zadd(key, {kline_member(T0, close="100.00000000"): T0}, nx=True)
    await redis.zadd(key, {kline_member(T0, close="100.50000000"): T0}, nx=True)
    assert await redis.zcount(key, T0, T0) == 2  # the seed's flaw, reproduced
    await store.write_candles(S, [(T0, kline_member(T0, close="100.50000000"))], 1)
    assert await redis.zrange(key, 0, -1) == [kline_member(T0, close="100.50000000")]


async def test_write_publishes_klines_updated_only_on_change(
    store: Store, redis: aioredis.Redis
) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(store.keys.klines_updated_channel)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    await store.write_candles(S, [(T0, kline_member(T0))], 1)
    await store.write_candles(S, [(T0, kline_member(T0))], 2)  # no change: no message
    await store.write_candles(S, [(T0 + 60_000, kline_member(T0 + 60_000))], 3)
    got = []
    for _ in range(3):
        m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if m is not None:
            got.append(msgspec.json.decode(m["data"]))
    await pubsub.aclose()
    assert got == [
        {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "latest": T0,
            "count": 1,
            "added": 1,
            "replaced": 0,
        },
        {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "latest": T0 + 60_000,
            "count": 2,
            "added": 1,
            "replaced": 0,
        },
    ]


async def test_gaps_are_recorded_once(store: Store) -> None:
    gap = (T0 + 60_000, T0 + 180_000)
    await store.write_candles(S, [(T0 + 180_000, kline_member(T0 + 180_000))], 1, [gap])
    await store.write_candles(S, [], 2, [gap])
    assert await store.gaps(S) == [gap]


async def test_large_batch_is_one_atomic_write(store: Store) -> None:
    rows = [(T0 + i * 60_000, kline_member(T0 + i * 60_000)) for i in range(5000)]
    res = await store.write_candles(S, rows, 1)
    assert (res.added, res.count) == (5000, 5000)
    res = await store.write_candles(S, rows, 2)
    assert res.unchanged == 5000


async def test_read_chart_returns_raw_members_latest_and_live(store: Store) -> None:
    rows = [(T0 + i * 60_000, kline_member(T0 + i * 60_000)) for i in range(10)]
    await store.write_candles(S, rows, 1)
    await store.set_live_candle(S, b'{"time":1,"source":"live"}')
    read = await store.read_chart(S, limit=3)
    assert read.members == [m for _, m in rows[-3:]]
    assert read.latest == T0 + 9 * 60_000
    assert read.live == b'{"time":1,"source":"live"}'
    first = await store.read_chart(S, start_ms=T0 + 60_000, end_ms=T0 + 120_000)
    assert first.members == [rows[1][1], rows[2][1]]


async def test_live_candle_ttl_is_at_least_a_day_and_twice_the_interval(
    store: Store, redis: aioredis.Redis
) -> None:
    await store.set_live_candle(S, b"{}")
    assert 86_390_000 < await redis.pttl(store.keys.live_candle(S)) <= 86_400_000
    month = SeriesKey.of("BTCUSDT", "1M")
    await store.set_live_candle(month, b"{}")
    assert await redis.pttl(store.keys.live_candle(month)) > 61 * 86_400_000  # 2 x 31 days


async def test_one_live_write_sets_every_candle_and_price_with_its_own_ttl(
    store: Store, redis: aioredis.Redis
) -> None:
    hour, month = SeriesKey.of("ETHUSDT", "1h"), SeriesKey.of("ETHUSDT", "1M")
    writes = [LiveWrite(S, b"a"), LiveWrite(hour, b"b"), LiveWrite(month, b"c")]
    writes.append(LiveWrite(SeriesKey.of("ETHUSDT", "1m"), b"d"))  # 1m again, apart
    await store.write_live(writes, [("BTCUSDT", b"p1"), ("ETHUSDT", b"p2")])
    for w in writes:
        assert await redis.get(store.keys.live_candle(w.series)) == w.value
    assert await store.live_prices(["BTCUSDT", "ETHUSDT"]) == [b"p1", b"p2"]
    day = 86_400_000
    assert day - 10_000 < await redis.pttl(store.keys.live_candle(S)) <= day
    assert day - 10_000 < await redis.pttl(store.keys.live_price("ETHUSDT")) <= day
    assert await redis.pttl(store.keys.live_candle(month)) > 61 * day  # 2 x 31 days


@pytest.mark.parametrize("odd", [b"two\nlines", b""], ids=["newline", "empty"])
async def test_a_live_value_the_one_call_cannot_split_is_still_stored_exactly(
    store: Store, redis: aioredis.Redis, odd: bytes
) -> None:
    hour = SeriesKey.of("ETHUSDT", "1h")
    writes = [LiveWrite(S, b"a"), LiveWrite(hour, odd)]
    await store.write_live(writes, [("BTCUSDT", b"p1")])
    assert await redis.get(store.keys.live_candle(S)) == b"a"
    assert await redis.get(store.keys.live_candle(hour)) == odd
    assert await store.live_prices(["BTCUSDT"]) == [b"p1"]
    assert 86_390_000 < await redis.pttl(store.keys.live_candle(hour)) <= 86_400_000


async def test_remove_members_fixes_meta(store: Store) -> None:
    await store.write_candles(
        S, [(T0, kline_member(T0)), (T0 + 60_000, kline_member(T0 + 60_000))], 1
    )
    assert await store.remove_members(S, [kline_member(T0 + 60_000)], 2) == 1
    meta = await store.meta(S)
    assert (meta.latest, meta.count) == (T0, 1)


async def test_closed_live_candles_are_kept_until_their_official_candles_are_stored(
    store: Store, redis: aioredis.Redis
) -> None:
    def closed(t: int, close: str = "1") -> ClosedLive:
        return ClosedLive(S, t, msgspec.json.encode({"time": t, "close": close}))

    key = store.keys.live_closed(S)
    await store.write_live([], closed_candles=[closed(T0), closed(T0 + 60_000)])
    await store.write_live([], closed_candles=[closed(T0 + 120_000), closed(T0, close="2")])
    read = await store.read_chart(S)
    assert [msgspec.json.decode(m) for m in read.closed] == [
        {"time": T0, "close": "2"},  # one member per open time: the newer copy
        {"time": T0 + 60_000, "close": "1"},
        {"time": T0 + 120_000, "close": "1"},
    ]
    assert 86_390_000 < await redis.pttl(key) <= 86_400_000
    # official candles arrive for the first two: readers no longer get their live copies,
    # and the next write drops them from Redis
    await store.write_candles(
        S, [(T0, kline_member(T0)), (T0 + 60_000, kline_member(T0 + 60_000))], 2
    )
    read = await store.read_chart(S)
    assert [msgspec.json.decode(m)["time"] for m in read.closed] == [T0 + 120_000]
    await store.write_live([], closed_candles=[closed(T0 + 60_000)])  # late: pruned at once
    assert await redis.zrange(key, 0, -1, withscores=True) == [
        (msgspec.json.encode({"time": T0 + 120_000, "close": "1"}), T0 + 120_000)
    ]


def test_keys_keep_the_seed_names_and_hash_tag_for_cluster() -> None:
    assert Keys().klines(S) == "klines_z:BTCUSDT:1m"
    assert Keys().live_candle(S) == "live_candle:BTCUSDT:1m"
    assert Keys().live_price("BTCUSDT") == "live_price:BTCUSDT"
    assert Keys(prefix="lc:", cluster=True).meta(S) == "lc:klines_meta:{BTCUSDT:1m}"


@pytest.fixture
def cluster_url(tmp_path: Path) -> Iterator[str]:
    """A one-node Redis Cluster (all 16384 slots) on a free port (cluster_support)."""
    with cluster(tmp_path / "cluster", masters=1, replicas_per_master=0) as c:
        yield c.url


async def test_writes_work_on_redis_cluster_with_hash_tagged_keys(cluster_url: str) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        store = Store(client, Keys(cluster=True))  # type: ignore[arg-type]
        res = await store.write_candles(
            S, [(T0, kline_member(T0))], 1, [(T0 - 120_000, T0 - 60_000)]
        )
        assert res.added == 1
        assert (await store.meta(S)).latest == T0
        read = await store.read_chart(S)
        assert read.members == [kline_member(T0)]
        plain = Store(client, Keys(cluster=False))  # type: ignore[arg-type]
        with pytest.raises(Exception, match=r"(?i)slot"):
            await plain.write_candles(S, [(T0, kline_member(T0))], 1)
    finally:
        await client.aclose()
        await asyncio.sleep(0)


async def test_the_bounded_client_on_redis_cluster_refuses_what_exceeds_its_pool(
    cluster_url: str,
) -> None:
    """The cluster client does not wait for a free connection: beyond the bound a read
    fails at once with a ConnectionError (a 503), and no more connections are opened."""
    client = connect(cluster_url, cluster=True, max_connections=4, timeout_s=2.0)
    observer = aioredis.Redis.from_url(cluster_url)
    try:
        store = Store(client, Keys(cluster=True))
        results = await asyncio.gather(*(store.meta(S) for _ in range(50)), return_exceptions=True)
        assert any(r == Meta() for r in results)
        refused = [r for r in results if r != Meta()]
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in refused), refused
        # 4 for commands, 1 the client keeps for cluster discovery (CLUSTER SLOTS)
        assert int((await observer.info("clients"))["connected_clients"]) - 1 <= 4 + 1
        assert await store.ping_ms() >= 0  # no probe thread on a cluster: the client's PING
    finally:
        await client.aclose()
        await observer.aclose()
        await asyncio.sleep(0)


async def test_cancelling_a_task_mid_command_really_cancels_it(redis: aioredis.Redis) -> None:
    """redis-py 8.0/8.1 swallow the CancelledError here and the task runs on forever;
    every supervised task relies on cancellation, hence the pin below 8."""

    async def worker() -> None:
        while True:
            await redis.hdel("x", "y")

    for i in range(30):
        task = asyncio.create_task(worker())
        await asyncio.sleep(0.001 * (i % 5))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the cancelled task kept running"
        assert task.cancelled()


async def test_a_row_outside_its_replace_window_only_fills_a_missing_open_time(
    store: Store,
) -> None:
    """A REST row of a candle that closed just now may be stale: it must not replace the
    stored (stream) row, though it may fill a missing one beside it."""
    good, stale = kline_member(T0, close="100.50000000"), kline_member(T0, close="100.00000000")
    await store.write_candles(S, [(T0, good)], 1)
    later = T0 + 60_000
    res = await store.write_candles(
        S, [(T0, stale), (later, kline_member(later))], 2, replace_until_ms=T0 - 1
    )
    # the row added outside the window is counted as filled (the fetcher has it re-read)
    assert (res.added, res.replaced, res.kept, res.replaced_opens, res.filled) == (1, 0, 1, (), 1)
    assert [m for m, _ in await store.members(S)] == [good, kline_member(later)]
    res = await store.write_candles(S, [(T0, stale)], 3, replace_until_ms=T0)
    assert (res.replaced, res.kept, res.replaced_opens, res.filled) == (1, 0, (T0,), 0)
    # inside the window an added row is not one that merely filled
    earlier = T0 - 60_000
    res = await store.write_candles(S, [(earlier, kline_member(earlier))], 4, replace_until_ms=T0)
    assert (res.added, res.filled) == (1, 0)
    assert [m for m, _ in await store.members(S)] == [
        kline_member(earlier),
        stale,
        kline_member(later),
    ]


async def test_official_writes_of_many_series_go_in_one_round_trip(store: Store) -> None:
    series = [SeriesKey.of(f"S{n}USDT", "1m") for n in range(300)]
    writes = [OfficialWrite(s, [(T0, kline_member(T0))]) for s in series]
    results = await store.write_officials(writes, 5)
    assert [r.added for r in results] == [1] * 300
    assert [(await store.meta(s)).latest for s in series[:5]] == [T0] * 5
    again = await store.write_officials(writes, 6)
    assert [r.unchanged for r in again] == [1] * 300
    present = await store.present_opens([(s, T0 - 1, T0 + 60_000) for s in series[:3]])
    assert present == [[T0]] * 3


async def test_official_writes_mean_what_each_series_own_write_would(store: Store) -> None:
    """``write_officials``' records (a single row packed in place, several rows, rows
    packed by the caller; replace windows) are ``write_candles``' arguments: the same
    results, members and notices, series by series."""
    a, b, c = (SeriesKey.of(f"{x}USDT", "1m") for x in ("AAA", "BBB", "CCC"))
    rows = [(T0 + i * 60_000, kline_member(T0 + i * 60_000)) for i in range(3)]
    await store.write_candles(a, rows[:1], 1)
    stale = kline_member(T0, close="100.50000000")
    async with asyncio.timeout(10):
        subscribed = asyncio.Event()
        notices = store.listen(store.keys.klines_updated_channel, subscribed=subscribed.set)
        first = asyncio.ensure_future(anext(notices))
        await subscribed.wait()
        results = await store.write_officials(
            [
                OfficialWrite(a, [(T0, stale)], T0 + 1, T0 + 60_000),  # outside: kept
                OfficialWrite(b, rows),
                OfficialWrite(c, pack_rows(rows), T0, T0),  # two rows fill, outside it
            ],
            7,
        )
        _, notice = await first
        await notices.aclose()
    got = [(r.added, r.unchanged, r.kept, r.latest, r.count, r.filled) for r in results]
    assert got == [
        (0, 0, 1, T0, 1, 0),
        (3, 0, 0, T0 + 120_000, 3, 0),
        (3, 0, 0, T0 + 120_000, 3, 2),
    ]
    assert [m for m, _ in await store.members(a)] == [kline_member(T0)]
    assert [m for m, _ in await store.members(c)] == [m for _, m in rows]
    assert ((await store.meta(b)).count, (await store.meta(c)).updated_ms) == (3, 7)
    assert msgspec.json.decode(notice) == {
        "symbol": "BBBUSDT",
        "interval": "1m",
        "latest": T0 + 120_000,
        "count": 3,
        "added": 3,
        "replaced": 0,
    }


async def test_a_large_write_keeps_a_small_series_compact_and_leaves_no_scratch_key(
    store: Store, redis: aioredis.Redis
) -> None:
    """A thousand rows merged into a listpack series through the scratch key: one member
    per open time (replaced, unchanged and new rows alike), the series still listpack-
    encoded (~200 B a candle, not ~280), and the scratch key gone."""
    first = [(T0 + i * 60_000, kline_member(T0 + i * 60_000)) for i in range(1000)]
    res = await store.write_candles(S, first, 1)
    assert (res.added, res.count) == (1000, 1000)
    second = [
        (o, kline_member(o, close="100.50000000") if o < T0 + 500 * 60_000 else kline_member(o))
        for o in (T0 + i * 60_000 for i in range(250, 1250))
    ]
    res = await store.write_candles(S, second, 2)
    assert (res.added, res.replaced, res.unchanged, res.count) == (250, 250, 500, 1250)
    members = await store.members(S)
    assert [score for _, score in members] == [float(T0 + i * 60_000) for i in range(1250)]
    assert dict((score, m) for m, score in members)[float(T0 + 300 * 60_000)] == kline_member(
        T0 + 300 * 60_000, close="100.50000000"
    )
    assert await redis.object("encoding", store.keys.klines(S)) == b"listpack"
    assert await redis.exists(store.keys.klines_scratch(S)) == 0
    assert (await store.meta(S)).count == 1250


async def test_one_open_time_twice_in_a_batch_is_stored_once_the_later_row_winning(
    store: Store,
) -> None:
    for n in (2, 500):  # the direct path and the scratch-key path
        s = SeriesKey.of(f"DUP{n}USDT", "1m")
        rows = [(T0 + i * 60_000, kline_member(T0 + i * 60_000)) for i in range(n)]
        rows.append((T0, kline_member(T0, close="100.50000000")))
        res = await store.write_candles(s, rows, 1)
        assert (res.added, res.count) == (n, n)
        members = await store.members(s)
        assert len(members) == n
        assert members[0] == (kline_member(T0, close="100.50000000"), float(T0))


async def test_packed_rows_are_stored_as_their_pairs_are(store: Store) -> None:
    pairs = [(T0 + i * 60_000, kline_member(T0 + i * 60_000)) for i in range(300)]
    packed = pack_rows(pairs)
    as_pairs = SeriesKey.of("BTCUSDT", "5m")  # only the key differs
    assert await store.write_candles(S, packed, 1) == await store.write_candles(as_pairs, pairs, 1)
    k = store.keys
    assert await store.redis.zrange(k.klines(S), 0, -1, withscores=True) == (
        await store.redis.zrange(k.klines(as_pairs), 0, -1, withscores=True)
    )
    assert [m for _, m in pairs] == await store.redis.zrange(k.klines(S), 0, -1)


async def test_the_metas_of_many_series_are_each_series_meta(store: Store) -> None:
    series = [SeriesKey.of(f"S{i}USDT", "1m") for i in range(5)]
    for i, s in enumerate(series[:3]):
        await store.write_candles(s, [(T0 + i * 60_000, kline_member(T0 + i * 60_000))], 7)
    await store.set_error(series[1], "down")
    assert await store.metas(series) == [await store.meta(s) for s in series]
    assert [m.latest for m in await store.metas(series)] == [
        T0,
        T0 + 60_000,
        T0 + 120_000,
        None,
        None,
    ]
    assert await store.metas([]) == []
