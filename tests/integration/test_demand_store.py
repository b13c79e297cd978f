"""The wanted and admitted symbols in a real Redis (store/demand.py) and the proxy's
wishes (web/proxy/demand.py): the cap holds whoever asks, idle wishes are forgotten,
a request path writes at most once per symbol per period, unknown symbols never."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import redis.asyncio as aioredis

from livecandle.domain.intervals import parse_interval
from livecandle.domain.universe import ON_DEMAND, SymbolEntry
from livecandle.store import Keys, Store, connect
from livecandle.store.demand import DemandStore
from livecandle.web.params import Served
from livecandle.web.proxy.demand import Wishes
from tests.integration.cluster_support import cluster

T0 = 1_700_000_000_000


async def test_admission_holds_the_cap_keeps_the_admitted_and_forgets_the_idle(
    store: Store, redis: aioredis.Redis
) -> None:
    ds = DemandStore(store)
    await ds.want(["AAAUSDT"], T0)
    assert set(await ds.admit(T0, 10_000, 2)) == {"AAAUSDT"}
    # a flood of wishes: the admitted one stays, one more is admitted, no more
    await ds.want([f"S{i:04d}USDT" for i in range(500)], T0 + 1000)
    admitted = await ds.admit(T0 + 1000, 10_000, 2)
    assert len(admitted) == 2 and "AAAUSDT" in admitted
    assert admitted["AAAUSDT"].since_ms == T0 and admitted["AAAUSDT"].asked_ms == T0
    # AAAUSDT not asked again: idle past 10 s, dropped, its slot taken by a wanted one
    after = await ds.admit(T0 + 10_500, 10_000, 2)
    assert "AAAUSDT" not in after and len(after) == 2
    assert "AAAUSDT" not in await ds.wanted()
    # a lowered cap drops the least recently asked; a cap of 0 admits none
    assert len(await ds.admit(T0 + 10_500, 10_000, 1)) == 1
    assert await ds.admit(T0 + 10_500, 10_000, 0) == {}


async def test_warm_is_marked_once_for_admitted_symbols_only_and_release_forgets(
    store: Store, redis: aioredis.Redis
) -> None:
    ds = DemandStore(store)
    await ds.want(["BBBUSDT"], T0)
    await ds.want(["AAAUSDT"], T0 + 1)  # the most recently asked is admitted first
    assert set(await ds.admit(T0 + 1, 60_000, 1)) == {"AAAUSDT"}
    assert await ds.mark_warm(["AAAUSDT", "BBBUSDT"], T0 + 5) == 1
    assert await ds.mark_warm(["AAAUSDT"], T0 + 9) == 0  # warm since the first time
    assert (await ds.admit(T0 + 10, 60_000, 1))["AAAUSDT"].warm_ms == T0 + 5
    await ds.release(["AAAUSDT"])
    assert "AAAUSDT" not in await ds.wanted()
    assert set(await ds.admit(T0 + 10, 60_000, 1)) == {"BBBUSDT"}


async def test_the_wanted_set_is_bounded_without_dropping_admitted_symbols(
    store: Store, redis: aioredis.Redis
) -> None:
    ds = DemandStore(store)
    await ds.want(["OLDUSDT"], T0)
    await ds.admit(T0, 60_000, 1)
    await ds.want([f"S{i:03d}USDT" for i in range(100)], T0 + 1, bound=10)
    wanted = await ds.wanted()
    assert len(wanted) == 10 and "OLDUSDT" in wanted


class _Statuses:
    def __init__(self, statuses: Mapping[str, str]) -> None:
        self.statuses = statuses

    def held(self) -> Mapping[str, str]:
        return self.statuses

    async def read(self) -> Mapping[str, str]:
        return self.statuses


async def test_wishes_are_batched_written_once_per_period_and_only_for_trading_symbols(
    store: Store, redis: aioredis.Redis
) -> None:
    served = Served(["BTCUSDT"], [parse_interval("1m")], on_demand=True)
    listing = _Statuses({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "BNBUSDT": "BREAK"})
    writes: list[list[str]] = []
    wishes = Wishes(store, served, listing.held, listing.read, lambda: T0, 5, every_s=60.0)
    want = wishes.demand.want

    async def counted(symbols: list[str], now_ms: int, bound: int = 10_000) -> None:
        writes.append(list(symbols))
        await want(symbols, now_ms, bound)

    wishes.demand.want = counted  # type: ignore[method-assign]
    wishes.flush_s = 0.05
    for _ in range(100):  # a busy client: one write
        wishes.asked(["ETHUSDT", "BTCUSDT", "BNBUSDT", "NOSUCHUSDT"])
    await asyncio.sleep(0.3)
    wishes.asked(["ETHUSDT"])  # within the period: nothing more
    await asyncio.sleep(0.3)
    assert writes == [["ETHUSDT"]]
    assert set(await wishes.demand.wanted()) == {"ETHUSDT"}
    # a symbol served on demand is still wished for (kept alive while asked)
    served.entries["ETHUSDT"] = SymbolEntry(
        "ETHUSDT", "TRADING", T0, True, False, demand=ON_DEMAND, warm_ms=T0
    )
    wishes._last.clear()
    wishes.asked(["ETHUSDT"])
    await asyncio.sleep(0.3)
    assert writes[-1] == ["ETHUSDT"]


async def test_the_demand_scripts_run_on_a_redis_cluster(tmp_path: Path) -> None:
    with cluster(tmp_path / "cluster") as c:
        client = connect(c.url, cluster=True, timeout_s=2.0)
        try:
            ds = DemandStore(Store(client, Keys(cluster=True)))
            await ds.want(["AAAUSDT", "BBBUSDT"], T0)
            assert set(await ds.admit(T0, 60_000, 5)) == {"AAAUSDT", "BBBUSDT"}
            assert await ds.mark_warm(["AAAUSDT"], T0 + 1) == 1
            await ds.release(["BBBUSDT"])
            assert (await ds.admit(T0 + 2, 60_000, 5))["AAAUSDT"].warm_ms == T0 + 1
            assert set(await ds.wanted()) == {"AAAUSDT"}
        finally:
            await client.aclose()
