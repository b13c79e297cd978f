"""A limit lowered under load: BinanceRest against the emulator's weight rule (a 429,
then 3 requests landing in its Retry-After period ban the IP with a 418)."""

from __future__ import annotations

import asyncio

from livecandle.exchange.binance.rest import BinanceRest
from tests.helpers import EmulatorProcess

MIN = 60_000


async def test_a_limit_lowered_under_load_never_ends_in_a_ban() -> None:
    with EmulatorProcess(
        "--weight-limit", "60", "--weight-window", "2", "--history-days", "3", "--rate", "1"
    ) as emu:
        async with BinanceRest(emu.rest_url) as rest:
            now_ms = await rest.server_time()
            await rest.exchange_info()  # learns 60 per 2 s
            assert (rest.budget.limit, rest.budget.window_ms) == (60, 2_000)
            start_ms = (now_ms // MIN - 3 * 1440 + 60) * MIN  # inside the 3 days of history

            async def pages(symbol: str, interval: str) -> int:
                rows = 0
                async for page in rest.iter_klines(symbol, interval, start_ms):
                    rows += len(page)
                return rows

            async def trades(symbol: str, calls: int) -> int:
                got = 0
                for i in range(calls):
                    got += len(await rest.agg_trades(symbol, from_id=i * 100, limit=100))
                return got

            # the exchange lowers its limit after the client learned it: nothing says so
            # until a 429
            await asyncio.to_thread(emu.control, weight_limit=16)
            callers = [
                asyncio.create_task(pages("BTCUSDT", "1m")),
                asyncio.create_task(pages("ETHUSDT", "1m")),
                asyncio.create_task(pages("BTCUSDT", "3m")),
                asyncio.create_task(pages("ETHUSDT", "3m")),
                asyncio.create_task(trades("BTCUSDT", 5)),
                asyncio.create_task(trades("ETHUSDT", 5)),
            ]
            async with asyncio.timeout(120):
                done = await asyncio.gather(*callers)
            state = await asyncio.to_thread(emu.state)
        assert state["rejected_429"] >= 1  # the lowered limit was hit
        assert state["rejected_418"] == 0
        # learned from what the exchange accepted (the window the limit fell in may have
        # taken more under the old limit; a later 429, one request in flight, corrects it)
        assert rest.budget.limit < 60
        assert min(done[:2]) > 4000 and min(done[2:4]) > 1400
        assert done[4] == done[5] == 500
