"""Symbol leases on a real redis-server (issue 10 items 1 and 2): acquire, renew, steal
after expiry, release, fair shares between workers, and a write of a stale epoch refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SeriesKey
from livecandle.runtime.leases import LeaseManager
from livecandle.store import ClosedLive, Keys, LiveWrite, Store, connect, scripts
from livecandle.store.budget import RedisConnectionAttempts, RedisWeightWindow
from livecandle.store.fencing import FencedStore, write_live_fenced
from livecandle.store.leases import Leases, Resume, lease_workers
from livecandle.store.store import OfficialWrite
from tests.builders import kline_member
from tests.integration.cluster_support import cluster

TTL_MS = 60_000
T0 = 1_700_000_040_000
BTC = SeriesKey.of("BTCUSDT", "1m")


async def _expire(redis: aioredis.Redis, key: str) -> None:
    """Let a lease run out now (the TTL passing, without waiting for it)."""
    await redis.pexpire(key, 1)
    while await redis.exists(key):  # noqa: ASYNC110 - Redis expires it within a ms
        await asyncio.sleep(0.005)


async def test_a_lease_has_one_owner_is_renewed_and_released(store: Store) -> None:
    a, b = Leases(store, "a"), Leases(store, "b")
    assert await a.acquire(["BTCUSDT", "ETHUSDT"], TTL_MS) == {"BTCUSDT": 1, "ETHUSDT": 1}
    assert await b.acquire(["BTCUSDT"], TTL_MS) == {}  # held
    assert await a.acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 1}  # ours: the same epoch
    assert await a.renew({"BTCUSDT": 1, "ETHUSDT": 1}, TTL_MS) == set()
    assert await b.renew({"BTCUSDT": 1}, TTL_MS) == {"BTCUSDT"}  # not b's
    assert await a.owners(["BTCUSDT", "XRPUSDT"]) == {"BTCUSDT": "a", "XRPUSDT": None}
    assert await b.release(["BTCUSDT"]) == 0  # not b's to release
    assert await a.release(["BTCUSDT", "ETHUSDT"]) == 2
    assert await b.acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 2}  # a new epoch


async def test_an_expired_lease_is_taken_at_a_new_epoch_and_the_old_owner_cannot_renew(
    store: Store, redis: aioredis.Redis
) -> None:
    a, b = Leases(store, "a"), Leases(store, "b")
    assert await a.acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 1}
    await _expire(redis, store.keys.lease("BTCUSDT"))
    assert await b.acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 2}
    assert await a.renew({"BTCUSDT": 1}, TTL_MS) == {"BTCUSDT"}
    # expired and taken back by a itself: the old epoch's renewal still fails
    await _expire(redis, store.keys.lease("BTCUSDT"))
    assert await a.acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 3}
    assert await a.renew({"BTCUSDT": 1}, TTL_MS) == {"BTCUSDT"}
    assert await a.renew({"BTCUSDT": 3}, TTL_MS) == set()


async def test_a_live_write_of_a_stale_epoch_is_refused_and_the_owners_is_stored(
    store: Store, redis: aioredis.Redis
) -> None:
    old, new = Leases(store, "old"), Leases(store, "new")
    assert await old.acquire(["BTCUSDT", "ETHUSDT"], TTL_MS) == {"BTCUSDT": 1, "ETHUSDT": 1}
    eth = SeriesKey.of("ETHUSDT", "1m")
    refused = await write_live_fenced(
        store,
        {"BTCUSDT": 1, "ETHUSDT": 1},
        {"BTCUSDT": Resume(10, 20, 1, "old")},
        [LiveWrite(BTC, b"old-btc"), LiveWrite(eth, b"old-eth")],
        [("BTCUSDT", b"1")],
        publish=b"batch",
    )
    assert refused == set()
    assert await store.live_candle(BTC) == b"old-btc"
    assert Resume.decode(await redis.get(store.keys.live_resume("BTCUSDT"))) == Resume(
        10, 20, 1, "old"
    )
    await _expire(redis, store.keys.lease("BTCUSDT"))
    assert await new.acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 2}
    # the old owner, back from a pause, writes at its old epoch: BTC refused, ETH stored
    refused = await write_live_fenced(
        store,
        {"BTCUSDT": 1, "ETHUSDT": 1},
        {"BTCUSDT": Resume(11, 21, 1, "old")},
        [LiveWrite(BTC, b"stale"), LiveWrite(eth, b"eth2")],
        [("BTCUSDT", b"2")],
        closed_candles=[ClosedLive(BTC, 0, b"{}")],
    )
    assert refused == {"BTCUSDT"}
    assert await store.live_candle(BTC) == b"old-btc"
    assert await store.live_price("BTCUSDT") == b"1"
    assert not await redis.exists(store.keys.live_closed(BTC))
    assert Resume.decode(await redis.get(store.keys.live_resume("BTCUSDT"))).agg_id == 10
    assert await store.live_candle(eth) == b"eth2"
    assert await write_live_fenced(store, {"BTCUSDT": 2}, {}, [LiveWrite(BTC, b"new")]) == set()
    assert await store.live_candle(BTC) == b"new"


class _Owned:
    """What a manager's ``on_change`` told: the symbols it follows now."""

    def __init__(self) -> None:
        self.symbols: set[str] = set()
        self.resumed: dict[str, Resume | None] = {}

    async def __call__(self, taken: dict[str, Resume | None], gone: set[str]) -> None:
        assert not set(taken) & self.symbols
        self.symbols |= set(taken)
        self.resumed.update(taken)
        self.symbols -= gone


async def test_workers_take_fair_shares_hand_on_a_surplus_gradually_and_release_on_stop(
    store: Store, redis: aioredis.Redis
) -> None:
    symbols = {f"S{n}USDT" for n in range(30)}
    owned = [_Owned() for _ in range(3)]
    managers = [LeaseManager(Leases(store, f"w{i}"), owned[i], TTL_MS) for i in range(3)]
    for m in managers:
        m.set_candidates(symbols)
    await managers[0].round()
    assert owned[0].symbols == symbols  # alone: everything
    await managers[1].round()  # joins: two workers, nothing free yet
    assert owned[1].symbols == set()
    steps = 0
    while len(owned[0].symbols) > 15:  # a few symbols handed on per round, not all at once
        before = len(owned[0].symbols)
        await managers[0].round()
        assert 0 < before - len(owned[0].symbols) <= 4
        await managers[1].round()
        steps += 1
    assert steps >= 3
    await managers[1].round()
    assert len(owned[0].symbols) == len(owned[1].symbols) == 15
    assert not owned[0].symbols & owned[1].symbols
    await managers[2].round()
    for _ in range(6):
        for m in managers:
            await m.round()
    assert sorted(len(o.symbols) for o in owned) == [10, 10, 10]
    assert set().union(*(o.symbols for o in owned)) == symbols
    # a clean stop releases at once: the others take its symbols in their next round
    leaving = owned[2].symbols
    await managers[2].stop()
    assert all(v is None for v in (await managers[0].leases.owners(sorted(leaving))).values())
    for m in managers[:2]:
        await m.round()
        await m.round()
    assert owned[0].symbols | owned[1].symbols == symbols
    assert len(owned[0].symbols) == len(owned[1].symbols) == 15


async def test_an_official_write_of_a_symbol_not_owned_or_of_a_stale_epoch_is_refused(
    store: Store, redis: aioredis.Redis
) -> None:
    owned: dict[str, int] = {}
    fenced = FencedStore(store, owned.get)
    row = (T0, kline_member(T0))
    assert (await fenced.write_candles(BTC, [row], 1)).added == 0  # not owned at all
    owned.update(await Leases(store, "old").acquire(["BTCUSDT"], TTL_MS))
    assert (await fenced.write_candles(BTC, [row], 1)).added == 1
    await _expire(redis, store.keys.lease("BTCUSDT"))
    assert await Leases(store, "new").acquire(["BTCUSDT"], TTL_MS) == {"BTCUSDT": 2}
    later = (T0 + 60_000, kline_member(T0 + 60_000))
    res = await fenced.write_officials([OfficialWrite(BTC, [later])], 2)
    assert res[0].added == 0 and fenced.refused == 2
    assert await store.count(BTC) == 1  # the stale worker's row was not stored


async def test_leases_fencing_and_the_shared_budget_work_on_three_masters(tmp_path: Path) -> None:
    symbols = [f"S{n}USDT" for n in range(12)]  # their slots are on every master
    with cluster(tmp_path / "cluster") as c:
        assert len({c.master_of(Keys(cluster=True).lease(s)).port for s in symbols}) == 3
        client = connect(c.url, cluster=True, timeout_s=2.0)
        try:
            store = Store(client, Keys(cluster=True))
            one_minute = [INTERVALS["1m"]]  # the series whose fences an owner raises
            a, b = Leases(store, "a", one_minute), Leases(store, "b", one_minute)
            assert await a.beat(TTL_MS, {"owned": 12}) == ["a"]
            assert await b.beat(TTL_MS) == ["a", "b"]
            assert (await lease_workers(store))["owned"] == 12
            got = await a.acquire(symbols, TTL_MS)
            assert got == dict.fromkeys(symbols, 1)
            assert await b.acquire(symbols, TTL_MS) == {}
            assert await a.renew(got, TTL_MS) == set()
            assert set((await a.owners(symbols)).values()) == {"a"}
            one = SeriesKey.of(symbols[0], "1m")
            assert (
                await write_live_fenced(
                    store,
                    got,
                    {symbols[0]: Resume(5, 6, 1, "a")},
                    [LiveWrite(one, b"a")],
                    [(symbols[0], b"1")],
                    publish=b"batch",
                    closed=[b"closed"],
                    closed_candles=[ClosedLive(one, T0, b"{}")],
                )
                == set()
            )
            assert await store.live_price(symbols[0]) == b"1"
            assert await client.zcard(store.keys.live_closed(one)) == 1
            assert (await a.resume_points(symbols[:1]))[symbols[0]].agg_id == 5
            assert await a.release(symbols[1:]) == 11
            assert await b.acquire(symbols[1:], TTL_MS) == dict.fromkeys(symbols[1:], 2)
            two = SeriesKey.of(symbols[1], "1m")
            refused = await write_live_fenced(
                store,
                {symbols[0]: 1, symbols[1]: 1},
                {},
                [LiveWrite(one, b"a2"), LiveWrite(two, b"stale")],
            )
            assert refused == {symbols[1]}
            assert await store.live_candle(one) == b"a2" and await store.live_candle(two) is None
            # a flush already past its epoch check when its worker paused: the fence of the
            # key's slot, raised by the new owner, refuses it in the script that would write
            key = store.keys.live_candle(two)
            fenced_set = [scripts.FENCED_SET, 2, key, store.keys.fence(key)]
            assert await client.execute_command("EVAL", *fenced_set, b"stale", 1000, 1) == -1
            assert await store.live_candle(two) is None
            assert await client.execute_command("EVAL", *fenced_set, b"new", 1000, 2) == 1
            assert await store.live_candle(two) == b"new"
            fenced = FencedStore(store, got.get)
            row = (T0, kline_member(T0))
            assert (await fenced.write_candles(two, [row], 1)).added == 0
            assert (await fenced.write_candles(one, [row], 1)).added == 1
            # a closed live candle whose official row is stored is dropped at once (0 kept):
            # not a refusal
            closing = [ClosedLive(one, T0, b"{}")]
            owned_one = {symbols[0]: 1}
            assert (
                await write_live_fenced(store, owned_one, {}, [], closed_candles=closing) == set()
            )
            window = RedisWeightWindow(store)
            assert await window.take(1, 60_000, 60, 100, 0) == (True, 60, 0)
            assert await window.take(1, 60_000, 50, 100, 0) == (False, 60, 0)
            # a pause for every process of the IP: its key in the window's slot
            now_ms = 1_700_000_000_000
            paused = await window.take(1, 60_000, 1, 100, 0, 0, now_ms + 30_000, now_ms)
            assert paused == (False, 60, now_ms + 30_000)
            await RedisConnectionAttempts(store, limit=3, safety=1.0).take()
        finally:
            await client.aclose()
