"""The proxy's copy of exchangeInfo: read from the exchange once per period for every
process sharing a Redis, and again when a symbol's status changes."""

from __future__ import annotations

import msgspec

from livecandle.domain.universe import SymbolEntry
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.store import Store
from livecandle.web.proxy.info import ExchangeInfoKeeper
from tests.helpers import EmulatorProcess


def _statuses(body: bytes) -> dict[str, str]:
    return {s["symbol"]: s["status"] for s in msgspec.json.decode(body)["symbols"]}


async def test_processes_sharing_redis_read_the_exchange_once_per_period(
    store: Store, emulator: EmulatorProcess
) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        first = ExchangeInfoKeeper(store, rest, rest.clock.now_ms, period_s=60)
        second = ExchangeInfoKeeper(store, rest, rest.clock.now_ms, period_s=60)
        body = await first.body({})
        assert _statuses(await second.body({})) == _statuses(body)
        assert (first.fetches, second.fetches) == (1, 0)
        stored = await store.exchange_info()
        assert stored is not None and _statuses(stored[0]) == _statuses(body)
        # a period later the next user reads it again, in the background
        third = ExchangeInfoKeeper(store, rest, lambda: rest.clock.now_ms() + 61_000, 60)
        await third.body({})
        assert third.fetches == 1


async def test_a_status_change_the_universe_saw_is_read_again_at_once(
    store: Store, emulator: EmulatorProcess
) -> None:
    entries: dict[str, SymbolEntry] = {}
    async with BinanceRest(emulator.rest_url) as rest:
        keeper = ExchangeInfoKeeper(
            store, rest, rest.clock.now_ms, period_s=3600, known=lambda: entries, recheck_s=0
        )
        assert _statuses(await keeper.body({}))["ETHUSDT"] == "TRADING"
        emulator.control(status={"symbol": "ETHUSDT", "status": "BREAK"})
        try:
            await keeper.body({})
            assert keeper.fetches == 1  # an hour's period: no reason to ask yet
            entries["ETHUSDT"] = SymbolEntry("ETHUSDT", "BREAK", 0, False, True)
            await keeper.body({})  # sees the universe disagree; reads in the background
            await keeper.settled()
            assert keeper.fetches == 2
            assert _statuses(await keeper.body({}))["ETHUSDT"] == "BREAK"
            only = await keeper.body({"symbolStatus": "BREAK"})
            assert list(_statuses(only)) == ["ETHUSDT"]
            # a universe that stays wrong (nobody updates it) costs one reading, not more
            keeper.status_recheck_s = 0
            entries["BTCUSDT"] = SymbolEntry("BTCUSDT", "HALT", 0, False, True)
            for _ in range(3):
                await keeper.body({})
                await keeper.settled()
            assert keeper.fetches == 3
        finally:
            emulator.control(status={"symbol": "ETHUSDT", "status": "TRADING"})
