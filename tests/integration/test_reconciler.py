"""Official rows that differ: the REST lag window, the reconciler, the emulator's
stale-klines switch (Binance's REST lagging just after a close)."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from livecandle.domain.clock import ManualClock
from livecandle.domain.model import SeriesKey
from livecandle.exchange.binance.parse import kline_member
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.official.background_fetcher import BackgroundFetcher
from livecandle.official.integrity import verify
from livecandle.official.reconciler import Reconciler
from livecandle.store import Store
from livecandle.store.store import OfficialWrite
from tests.helpers import EmulatorProcess
from tests.integration.http_support import http_server
from tests.integration.live_support import official


async def _rows(store: Store, series: SeriesKey) -> dict[int, bytes]:
    return {int(score): m for m, score in await store.members(series)}


async def test_a_reconciled_row_that_differs_replaces_the_stored_one_and_is_counted(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("ETHUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=10, reconcile=False)
        await fetcher.sync(series)
        stored = await _rows(store, series)
        open_ms = sorted(stored)[-3]
        good = msgspec.json.decode(stored[open_ms])
        wrong = [*good[:4], "1.00000000", *good[5:]]  # another close
        await store.write_candles(series, [(open_ms, msgspec.json.encode(wrong))], 1)
        reconciler = Reconciler(store, rest, rest.clock, rest_lag_ms=0, lookback_candles=5)
        reconciler.add(series)
        assert await reconciler.reconcile(series) == 1
        again = await reconciler.reconcile(series)  # nothing differs any more
        now_ms = rest.clock.now_ms()
    assert reconciler.replaced == 1 and again == 0
    assert msgspec.json.decode((await _rows(store, series))[open_ms]) == good
    assert good == await official(emulator, "ETHUSDT", "1m", open_ms)
    assert (await verify(store, [series], now_ms)).ok


async def test_a_stale_rest_row_never_replaces_a_stored_row_within_the_lag_window(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("BTCUSDT", "1s")
    # seconds with trades, which the switch cuts (a session's emulator just started has
    # none in its first rows, and a row without trades cannot be served stale)
    async with asyncio.timeout(15):
        while emulator.state()["symbols"]["BTCUSDT"]["live_trades"] < 100:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        fetcher = BackgroundFetcher(
            store, rest, [series], backfill_candles=30, rest_lag_ms=25_000, reconcile=False
        )
        await fetcher.sync(series)  # good rows (the switch is off), as a stream stores them
        good = await _rows(store, series)
        emulator.control(stale_klines_ms=20_000, stale_cut_ms=500)
        try:
            first = min(good)
            result = await fetcher.sync(series, first, max(good), prev_open_ms=first - 1000)
            assert emulator.state()["stale_rows"] > 0
            assert result.replaced == 0 and result.kept > 0
            assert {o: m for o, m in (await _rows(store, series)).items() if o in good} == good
            # without the window the same answer would have replaced good rows: the
            # window is what keeps them
            careless = BackgroundFetcher(store, rest, [series], rest_lag_ms=0, reconcile=False)
            spoilt = await careless.sync(series, first, max(good), prev_open_ms=first - 1000)
            assert spoilt.replaced > 0
        finally:
            emulator.control(stale_klines_ms=0)
        # once settled, the reconciler puts the exchange's final rows back, counted
        reconciler = Reconciler(store, rest, rest.clock, rest_lag_ms=0, lookback_candles=40)
        reconciler.add(series)
        await reconciler.reconcile(series)
        assert reconciler.replaced == spoilt.replaced
    after = await _rows(store, series)
    assert {o: after[o] for o in good} == good


async def test_without_spare_weight_only_a_suspect_series_is_re_read(
    store: Store, emulator: EmulatorProcess
) -> None:
    """A row filled over REST within the lag window may be stale: it is re-read once
    settled, and while the fetcher stays busy (history) once it has waited
    ``suspect_wait_ms``; other series wait for spare weight."""
    suspect, other = SeriesKey.of("BTCUSDT", "1m"), SeriesKey.of("ETHUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        reconciler = Reconciler(
            store, rest, rest.clock, rest_lag_ms=0, busy=lambda: True, suspect_wait_ms=1_000
        )
        reconciler.add(suspect)
        reconciler.add(other)
        suspected_ms = rest.clock.now_ms()
        reconciler.suspect(suspect)
        runner = asyncio.create_task(reconciler.run())
        try:
            async with asyncio.timeout(5):
                while reconciler.reads == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            read_ms = rest.clock.now_ms()
            await asyncio.sleep(0.5)  # nothing to await: the other one must stay unread
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    assert reconciler.reads == 1
    assert read_ms - suspected_ms >= 1_000  # history went first, for its wait
    assert await store.count(suspect) > 0 and await store.count(other) == 0


async def test_a_just_closed_rest_row_is_suspect_only_where_no_final_candle_stored_it(
    store: Store, emulator: EmulatorProcess
) -> None:
    """A REST row of the lag window that filled a missing open time may be stale: its
    series is re-read once settled. Where the stream's final candles had stored the lag
    window's open times already, the rows there are the exchange's own and nothing is
    re-read, though the page filled older ones (at the whole market's start such re-reads
    took a quarter of history's weight)."""
    finals, bare = SeriesKey.of("BTCUSDT", "1s"), SeriesKey.of("ETHUSDT", "1s")
    lag_ms = 10_000
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        fetcher = BackgroundFetcher(store, rest, [finals, bare], rest_lag_ms=lag_ms)
        reconciler = fetcher.reconciler
        assert reconciler is not None
        now_ms = rest.clock.now_ms()
        start_ms = now_ms - now_ms % 1000 - 30_000
        rows = await rest.klines("BTCUSDT", "1s", start_ms, None, 1000)
        end_ms = [r for r in rows if r.close_ms < rest.clock.now_ms()][-1].open_ms
        # the stream's final candles of one series' last 15 s, stored first (as the live
        # writer does); older open times are left to REST
        fresh = [r for r in rows if end_ms - 15_000 < r.open_ms <= end_ms]
        await store.write_officials(
            [OfficialWrite(finals, [(r.open_ms, kline_member(r)) for r in fresh])], now_ms
        )
        on_finals = await fetcher.sync(finals, start_ms, end_ms, prev_open_ms=start_ms - 1000)
        on_bare = await fetcher.sync(bare, start_ms, end_ms, prev_open_ms=start_ms - 1000)
        # the sync ran within the lag window of the newest row: it was fresh
        assert rest.clock.now_ms() - lag_ms < end_ms
    assert on_finals.stored > 0 and not on_finals.fresh_added
    assert on_bare.stored > on_finals.stored and on_bare.fresh_added
    assert reconciler.suspects == {bare}


async def test_a_series_the_exchange_shows_nothing_newer_for_is_not_read_again_at_once(
    store: Store,
) -> None:
    """A halted market answers no candle after the last re-read's start: the series is
    read again a while later, not at once (one series re-read in a loop, every other
    one's re-reads starved and the spare weight spent on the same question)."""
    asked = []

    async def klines(request: web.Request) -> web.Response:
        asked.append(request.query["symbol"])
        return web.json_response([])

    clock = ManualClock(1_700_000_040_000)
    series = SeriesKey.of("BTCUSDT", "1m")
    async with http_server({"/api/v3/klines": klines}) as url, BinanceRest(url) as rest:
        reconciler = Reconciler(store, rest, clock, rest_lag_ms=30_000)
        reconciler.add(series)
        task = asyncio.create_task(reconciler.run())
        try:
            async with asyncio.timeout(10):
                while reconciler.reads < 1:  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.01)
            due_ms = reconciler._due.due_ms(series)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert asked == ["BTCUSDT"]
    assert due_ms is not None and due_ms >= clock.now_ms() + 60_000


async def test_a_suspect_series_stays_suspect_until_a_re_read_covers_its_row(
    store: Store, emulator: EmulatorProcess
) -> None:
    """A row stored from REST within the lag window makes its series suspect. A re-read
    before that row has settled (its start lagging behind) does not clear it: the row
    would then wait for spare weight only, stale for as long."""
    series = SeriesKey.of("ETHUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        now_ms = rest.clock.now_ms()
        newest = series.interval.shift(series.interval.open_of(now_ms), -1)
        clock = ManualClock(newest + 60_000 + 1_000)  # a second after the newest closed
        reconciler = Reconciler(store, rest, clock, rest_lag_ms=30_000)
        reconciler.add(series)
        reconciler.suspect(series, newest)
        await reconciler.reconcile(series)  # the rows before it: settled; it: not yet
        assert series in reconciler.suspects
        clock.set(newest + 60_000 + 31_000)  # settled now
        await reconciler.reconcile(series)
        assert series not in reconciler.suspects
