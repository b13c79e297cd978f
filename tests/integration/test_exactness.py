"""Minutes of emulated market at a high trade rate: every closed live candle of every
interval must equal the exchange's official kline in all 12 fields, also while the
exchange drops connections, stalls a stream and skips messages."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.domain.intervals import INTERVAL_NAMES
from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from livecandle.store.codec import live_row
from tests.helpers import EmulatorProcess
from tests.integration.live_support import (
    LiveRecorder,
    official,
    running_service,
)

pytestmark = pytest.mark.slow

# 2026-06-01 00:00 UTC is a Monday, the 1st of a month and on the 3-day grid: every one of
# the 16 intervals closes at that instant.
ALL_CLOSE = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


async def _server_now(emu: EmulatorProcess) -> int:
    async with httpx.AsyncClient() as client:
        now: int = (await client.get(emu.rest_url + "/api/v3/time")).json()["serverTime"]
        return now


async def _until(emu: EmulatorProcess, t_ms: int) -> None:
    while (now := await _server_now(emu)) < t_ms:  # noqa: ASYNC110 - waiting for time itself
        await asyncio.sleep(min(5.0, (t_ms - now) / 1000))


async def _compare(emu: EmulatorProcess, rec: LiveRecorder) -> Counter[str]:
    compared: Counter[str] = Counter()
    for (symbol, interval, open_ms), candle in sorted(rec.closed.items()):
        if not candle["complete"]:
            continue
        assert live_row(candle) == await official(emu, symbol, interval, open_ms), (
            symbol,
            interval,
            open_ms,
        )
        compared[interval] += 1
    return compared


async def test_every_closed_live_candle_of_all_16_intervals_equals_the_official_kline(
    redis_url: str, redis: aioredis.Redis
) -> None:
    start = ALL_CLOSE - dt.timedelta(seconds=50)
    with EmulatorProcess(
        "--start-time", start.isoformat(), "--rate", "400", "--history-days", "40", "--seed", "11"
    ) as emu:
        async with (
            running_service(redis_url, emu, ",".join(INTERVAL_NAMES), backfill_candles=3) as svc,
            LiveRecorder(redis) as rec,
        ):
            await _until(emu, _ms(ALL_CLOSE) + 75_000)  # two minute closes after it
            store = Store(redis)
            # official candles of the big close arrived within seconds (not at the next run)
            for name in INTERVAL_NAMES:
                interval_series = SeriesKey.of("BTCUSDT", name)
                meta = await store.meta(interval_series)
                assert meta.latest is not None
                assert meta.latest >= interval_series.interval.shift(_ms(ALL_CLOSE), -1), name
            assert svc.feed is not None
            stats = svc.feed.stats()
        compared = await _compare(emu, rec)
    assert set(compared) == set(INTERVAL_NAMES), compared
    assert compared["1s"] >= 200
    assert stats["bad_messages"] == 0
    for s in stats["symbols"].values():
        assert s["mismatches"] == 0 and s["stale_trades"] == 0


async def test_exactness_holds_through_drops_stalls_and_skipped_messages(
    redis_url: str, redis: aioredis.Redis
) -> None:
    start = ALL_CLOSE + dt.timedelta(minutes=2, seconds=25)
    with EmulatorProcess(
        "--start-time", start.isoformat(), "--rate", "200", "--history-days", "5", "--seed", "12"
    ) as emu:
        async with (
            running_service(
                redis_url, emu, "1s,1m,3m", backfill_candles=3, stream_silence_s=2.0
            ) as svc,
            LiveRecorder(redis) as rec,
        ):
            t0 = await _server_now(emu)
            emu.control(skip_rate=0.03)  # lost messages mid-candle
            await _until(emu, t0 + 12_000)
            emu.control(skip_rate=0.0, drop_connections=True)  # every socket closed
            await _until(emu, t0 + 25_000)
            emu.control(stall={"symbol": "BTCUSDT", "seconds": 5})  # a silent stream
            await _until(emu, t0 + 45_000)  # past the 00:03:00 close of 1m and 3m
            emu.control(skip_rate=0.05)
            await _until(emu, t0 + 60_000)
            emu.control(skip_rate=0.0)
            await _until(emu, t0 + 70_000)
            assert svc.feed is not None
            stats = svc.feed.stats()
        compared = await _compare(emu, rec)
        emu_state = emu.state()["streams"]
    btc = stats["symbols"]["BTCUSDT"]
    assert emu_state["skipped"] > 50 and emu_state["dropped_connections"] >= 1
    assert btc["gaps"] >= 3 and btc["recovered"] > 50  # losses were seen and repaired
    assert svc.stream is not None and svc.stream.reconnects >= 2
    assert compared["1s"] >= 40 and compared["1m"] >= 1 and compared["3m"] >= 1, compared
    for s in stats["symbols"].values():
        assert s["mismatches"] == 0 and s["stale_trades"] == 0
