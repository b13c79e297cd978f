"""background_fetcher against the emulator and a real redis-server."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from livecandle.domain.clock import ServerClock
from livecandle.domain.model import SeriesKey
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.exchange.binance.weights import WeightBudget
from livecandle.official.background_fetcher import BackgroundFetcher
from livecandle.official.integrity import verify
from livecandle.runtime.redis_server import RedisServer
from livecandle.runtime.supervisor import Supervisor
from livecandle.store import Store
from livecandle.store.closings import encode_closings
from tests.helpers import EmulatorProcess
from tests.integration.http_support import http_server
from tests.integration.live_support import official
from tests.integration.redis_support import client, full, own_server

MIN = 60_000
HOUR = 3_600_000


async def _first_sync(fetcher: BackgroundFetcher, series: SeriesKey) -> None:
    """Run ``fetcher`` on ``series`` (its scheduler and workers) until a sync is done."""
    runner = asyncio.create_task(fetcher.run_series(series))
    try:
        await asyncio.wait_for(fetcher.wait_syncs(1), 10)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_first_start_backfills_the_last_n_closed_candles(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("BTCUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=50)
        await rest.server_time()
        before_ms = rest.clock.now_ms()
        result = await fetcher.sync(series)
        now_ms = rest.clock.now_ms()
    members = await store.members(series)
    assert result.stored == len(members)
    rows = [msgspec.json.decode(m) for m, _ in members]
    opens = [r[0] for r in rows]
    # a minute may turn during the sync: either minute's view is right
    minutes = {series.interval.open_of(t) for t in (before_ms, now_ms)}
    assert opens[-1] in {m - MIN for m in minutes}  # the newest closed, never the forming one
    assert opens[0] in {m - 50 * MIN for m in minutes}  # the last 50 candles
    assert opens == [opens[0] + i * MIN for i in range(len(opens))]
    assert all(r[6] < now_ms for r in rows)
    assert (await verify(store, [series], now_ms)).ok


async def test_a_backfill_of_a_full_page_takes_one_request(
    store: Store, emulator: EmulatorProcess
) -> None:
    # a page ending at the newest closed candle is the last: asking on would bring
    # only the forming one (9,600 wasted calls when the whole market starts)
    series = SeriesKey.of("ETHUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=1000)
        await rest.server_time()
        before_ms = rest.clock.now_ms()
        result = await fetcher.sync(series)
        now_ms = rest.clock.now_ms()
    assert result.stored == 1000
    turned = series.interval.open_of(before_ms) != series.interval.open_of(now_ms)
    assert result.requests == 1 or turned


async def test_refetch_is_a_no_op_and_a_later_sync_fills_the_downtime(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("ETHUSDT", "1s")
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=20)
        await rest.server_time()
        first = await fetcher.sync(series)
        again = await fetcher.sync(series)
        assert again.stored == 0 and again.replaced == 0
        await asyncio.sleep(2.5)  # downtime: real seconds must pass for 1s candles to close
        later = await fetcher.sync(series)
        now = rest.clock.now_ms()
    assert later.stored >= 2
    assert later.latest is not None and first.latest is not None
    assert later.latest >= first.latest + 2000
    report = await verify(store, [series], now)
    assert report.ok, report.text()


async def test_exchange_gaps_are_recorded_and_never_refetched(store: Store) -> None:
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).strftime("%Y-%m-%d")
    outage = f"{day}T06:00Z/{day}T08:00Z"
    with EmulatorProcess("--history-days", "5", "--outage", outage) as emu:
        series = SeriesKey.of("BTCUSDT", "1h")
        async with BinanceRest(emu.rest_url) as rest:
            fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=24 * 4)
            await rest.server_time()
            result = await fetcher.sync(series)
            start = int(dt.datetime.fromisoformat(f"{day}T06:00+00:00").timestamp() * 1000)
            assert result.gaps == [(start, start + 2 * HOUR)]
            assert await store.gaps(series) == [(start, start + 2 * HOUR)]
            again = await fetcher.sync(series)
            assert again.requests == 1  # from latest forward only, not the gap again
            # a restart's look for holes counts the recorded gap as no hole
            meta = await store.meta(series)
            assert meta.earliest is not None and meta.latest is not None
            whole = (meta.earliest - 1, meta.latest)
            assert not await fetcher._has_hole(series, *whole)
            report = await verify(store, [series], rest.clock.now_ms())
            assert report.ok, report.text()
            await store.redis.zremrangebyrank(store.keys.klines(series), 0, 0)
            assert await fetcher._has_hole(series, *whole)  # and a missing candle is one


async def test_a_candle_no_stream_stored_is_fetched_over_rest_a_grace_after_its_close(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("BTCUSDT", "1s")
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(
            store, rest, [series], backfill_candles=5, stream_grace_ms=300, reconcile=False
        )
        await rest.server_time()
        runner = asyncio.create_task(fetcher.run_series(series))
        try:
            async with asyncio.timeout(10):  # the backfill, then what is filled is known
                while (first := fetcher.status[series].filled_ms) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(fetcher.wait_syncs(4), 10)  # one per close, no stream
            now_ms = rest.clock.now_ms()
            latest = (await store.meta(series)).latest
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    assert latest is not None and latest >= first + 3000
    assert now_ms - (latest + 1000) < 300 + 1500  # the newest closed within grace + a round trip
    report = await verify(store, [series], now_ms)
    assert report.ok, report.text()


async def test_a_closed_candle_message_before_its_check_is_due_changes_nothing(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("BTCUSDT", "1h")  # the next check is up to an hour away
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=5, reconcile=False)
        await rest.server_time()
        runner = asyncio.create_task(fetcher.run_series(series))
        listener = asyncio.create_task(fetcher.listen_closed())
        try:
            await asyncio.wait_for(fetcher.wait_syncs(1), 10)
            await asyncio.wait_for(fetcher.listening.wait(), 5)
            before = emulator.state()["requests_by_endpoint"]["klines"]
            # a stray message for a candle long stored: no request for it
            message = encode_closings([("BTCUSDT", "1h", 0)])
            await store.redis.publish(store.keys.closed_channel, message)
            await asyncio.sleep(1.0)  # nothing to await: the point is that nothing happens
            assert emulator.state()["requests_by_endpoint"]["klines"] == before
        finally:
            runner.cancel()
            listener.cancel()
            await asyncio.gather(runner, listener, return_exceptions=True)


async def test_many_series_at_restart_never_trip_a_429(store: Store) -> None:
    with EmulatorProcess(
        "--weight-limit", "30", "--weight-window", "2", "--history-days", "3"
    ) as emu:
        series = [
            SeriesKey.of(s, i)
            for s in ("BTCUSDT", "ETHUSDT")
            for i in ("1m", "3m", "5m", "15m", "1h", "4h")
        ]
        async with BinanceRest(emu.rest_url) as rest:
            fetcher = BackgroundFetcher(store, rest, series, backfill_candles=100)
            await fetcher.prepare()  # learns the 30-per-2-s limit from exchangeInfo
            tasks = [asyncio.create_task(fetcher.run_series(s)) for s in series]
            try:
                await asyncio.wait_for(fetcher.wait_syncs(len(series)), 30)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        state = emu.state()
        assert state["rejected_429"] == 0 and state["rejected_418"] == 0
        assert all(fetcher.status[s].latest is not None for s in series)


async def test_unknown_symbol_is_reported_in_meta_and_not_retried(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("NOPEUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [series])
        await asyncio.wait_for(fetcher.run_series(series), 10)  # returns: nothing to retry
    meta = await store.meta(series)
    assert meta.last_error is not None and "'NOPEUSDT'" in meta.last_error
    assert "-1121" in meta.last_error


async def test_an_error_a_previous_run_left_in_meta_is_cleared_by_the_first_good_sync(
    store: Store, emulator: EmulatorProcess
) -> None:
    left, clean = SeriesKey.of("BTCUSDT", "1m"), SeriesKey.of("ETHUSDT", "1m")
    await store.set_error(left, "BinanceError: an old run's failure")
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [left, clean], backfill_candles=20)
        tasks = [asyncio.create_task(fetcher.run_series(s)) for s in (left, clean)]
        try:
            await asyncio.wait_for(fetcher.wait_syncs(2), 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert (await store.meta(left)).last_error is None
    assert (await store.meta(clean)).last_error is None
    assert (await store.meta(left)).count == 20


@pytest.mark.parametrize("interval", ["1w", "1M", "3d"])
async def test_calendar_intervals_backfill_on_their_grid(
    store: Store, emulator: EmulatorProcess, interval: str
) -> None:
    series = SeriesKey.of("BTCUSDT", interval)
    async with BinanceRest(emulator.rest_url) as rest:
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=3)
        await rest.server_time()
        await fetcher.sync(series)
        now = rest.clock.now_ms()
    opens = [int(s) for _, s in await store.members(series)]
    assert opens and all(series.interval.is_aligned(o) for o in opens)
    assert (await verify(store, [series], now)).ok


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with own_server(tmp_path) as s:
        yield s


async def test_a_full_redis_is_retried_like_the_exchange_without_restarting_the_task(
    server: RedisServer, emulator: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="livecandle.official.background_fetcher")
    series = SeriesKey.of("BTCUSDT", "1m")
    supervisor = Supervisor()
    async with client(server.url) as c, BinanceRest(emulator.rest_url) as rest:
        store = Store(c)
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=5)
        await rest.server_time()
        try:
            async with full(c):
                supervisor.spawn("fetch", functools.partial(fetcher.run_series, series))
                info = supervisor.infos["fetch"]
                async with asyncio.timeout(10):  # the first failure, recorded or a crash
                    while fetcher.storage_error is None and not info.restarts:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                assert info.restarts == 0  # before: the task crashed and was restarted
                assert fetcher.storage_error is not None and "maxmemory" in fetcher.storage_error
                assert fetcher.status[series].last_error == fetcher.storage_error
            await asyncio.wait_for(fetcher.wait_syncs(1), 15)  # backs off 1-2 s, 2-4 s ...
            assert supervisor.status()["fetch"]["restarts"] == 0
            assert fetcher.storage_error is None and fetcher.status[series].last_error is None
            assert await store.count(series) == 5
        finally:
            await supervisor.stop()
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "maxmemory" in said[0].getMessage()


async def test_the_first_start_backfills_even_when_the_stream_stored_finals_first(
    store: Store, emulator: EmulatorProcess
) -> None:
    series = SeriesKey.of("ETHUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        newest = series.interval.shift(series.interval.open_of(rest.clock.now_ms()), -1)
        for open_ms in (series.interval.shift(newest, -1), newest):  # as the stream stores them
            row = await official(emulator, "ETHUSDT", "1m", open_ms)
            await store.write_candles(series, [(open_ms, msgspec.json.encode(row))], 1)
        fetcher = BackgroundFetcher(store, rest, [series], backfill_candles=20, reconcile=False)
        await _first_sync(fetcher, series)
        now_ms = rest.clock.now_ms()
    assert await store.count(series) >= 20
    report = await verify(store, [series], now_ms)
    assert report.ok, report.text()


async def test_a_restart_fills_a_hole_older_than_the_newest_candles(
    store: Store, emulator: EmulatorProcess
) -> None:
    """History was fetched, then REST was out of reach for a while during which the
    stream stored its finals (the newest 200 candles), and the process restarted: the
    hole before those candles is fetched, not left for ever."""
    series = SeriesKey.of("ETHUSDT", "1m")
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.server_time()
        first = BackgroundFetcher(store, rest, [series], backfill_candles=600, reconcile=False)
        await first.sync(series)
        stored = await store.count(series)
        key = store.keys.klines(series)
        await store.redis.zremrangebyrank(key, -400, -201)  # 200 candles REST never stored
        assert await store.count(series) == stored - 200
        again = BackgroundFetcher(store, rest, [series], backfill_candles=600, reconcile=False)
        await _first_sync(again, series)
        now_ms = rest.clock.now_ms()
    assert await store.count(series) >= stored
    report = await verify(store, [series], now_ms)
    assert report.ok, report.text()


async def test_an_answer_that_cannot_be_read_fails_its_series_not_the_fetcher(
    store: Store,
) -> None:
    """A klines answer the fetcher cannot read (not the exchange's error format: a proxy
    in the way, a defect of ours): the series says so and is tried again later; the
    fetcher's workers and the other series go on."""
    asked: list[str] = []

    async def klines(request: web.Request) -> web.Response:
        asked.append(request.query["symbol"])
        if request.query["symbol"] == "BTCUSDT":
            return web.json_response([["not", "a", "kline"]])
        return web.json_response([])

    async def server_time(request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    btc, eth = SeriesKey.of("BTCUSDT", "1h"), SeriesKey.of("ETHUSDT", "1h")
    routes = {"/api/v3/klines": klines, "/api/v3/time": server_time}
    async with http_server(routes) as url, BinanceRest(url) as rest:
        fetcher = BackgroundFetcher(store, rest, [btc, eth], backfill_candles=5, reconcile=False)
        tasks = [asyncio.create_task(fetcher.run_series(s)) for s in (btc, eth)]
        try:
            async with asyncio.timeout(10):
                while fetcher.status[btc].last_error is None or "ETHUSDT" not in asked:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert not any(t.done() for t in tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert asked.count("BTCUSDT") == 1  # not again at once: after its back-off


class _PeakStore(Store):
    """A real store that notes how many writes of 100 rows or more ran at once."""

    running = peak = 0

    async def write_candles(self, series, rows, *args, **kwargs):  # type: ignore[no-untyped-def]
        big = len(rows) >= 100
        self.running += big
        self.peak = max(self.peak, self.running)
        try:
            return await super().write_candles(series, rows, *args, **kwargs)
        finally:
            self.running -= big


async def test_bulk_history_writes_go_to_redis_one_at_a_time(
    store: Store, emulator: EmulatorProcess
) -> None:
    """Redis runs each write script whole: live writes queued behind many concurrent
    1,000-row history writes waited for all of them. Concurrent backfills still overlap
    their requests, but their bulk writes never run together."""
    peaks = _PeakStore(store.redis, store.keys)
    series = [SeriesKey.of(s, i) for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "5m", "15m")]
    clock = ServerClock()
    async with BinanceRest(emulator.rest_url, clock, WeightBudget(clock, max_in_flight=6)) as rest:
        fetcher = BackgroundFetcher(peaks, rest, series, backfill_candles=1000, concurrency=6)
        await rest.server_time()
        results = await asyncio.gather(*(fetcher.sync(s) for s in series))
    assert [r.stored for r in results] == [1000] * len(series)
    assert peaks.peak == 1
