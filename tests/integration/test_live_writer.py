"""LiveWriter against a real Redis: what it writes, how often, and after a failure.

The symbols' state is driven as the feed drives it: trades into the builder, flags set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.clock import ManualClock
from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.domain.model import SCALE, SeriesKey
from livecandle.live.writer import FinalCandle, LiveWriter, SymbolLive
from livecandle.runtime.redis_server import RedisServer, free_port
from livecandle.store import Keys, Store
from livecandle.store.closings import decode_closings
from tests.builders import kline_member
from tests.integration.redis_support import client, command_stats, full, own_server

T0 = 1_700_000_100_000
M1 = INTERVALS["1m"]
OPEN0 = M1.open_of(T0)
BTC_1M = SeriesKey("BTCUSDT", M1)
END = b"--end of test messages--"

Messages = asyncio.Queue[tuple[str, bytes]]


def symbol_live(symbol: str = "BTCUSDT", intervals: Sequence[Interval] = (M1,)) -> SymbolLive:
    return SymbolLive(symbol, LiveCandleBuilder(intervals, ManualClock(T0)))


def trade(live: SymbolLive, time_ms: int, price: int) -> None:
    """One trade of one unit, handed over as the feed does."""
    closed = live.builder.add(time_ms, price, SCALE)
    live.last_trade_ms = time_ms
    live.agg_id += 1
    live.dirty = live.price_dirty = True
    if closed:
        live.closed.extend(closed)


@contextlib.asynccontextmanager
async def listening(store: Store, channel: str) -> AsyncIterator[Messages]:
    queue: Messages = asyncio.Queue()
    subscribed = asyncio.Event()

    async def listen() -> None:
        async for item in store.listen(channel, subscribed=subscribed.set):
            queue.put_nowait(item)

    task = asyncio.create_task(listen())
    try:
        async with asyncio.timeout(5):
            await subscribed.wait()
        yield queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def received(store: Store, channel: str, queue: Messages) -> list[Any]:
    """Every message published on ``channel`` so far (a marker published now arrives
    after all of them)."""
    await store.redis.publish(channel, END)
    out = []
    async with asyncio.timeout(5):
        while (item := await queue.get())[1] != END:
            out.append(msgspec.json.decode(item[1]))
    return out


async def json_at(redis: aioredis.Redis, key: str) -> Any:
    raw = await redis.get(key)
    return None if raw is None else msgspec.json.decode(raw)


async def test_between_key_writes_only_the_batch_message_goes_out(
    store: Store, redis: aioredis.Redis
) -> None:
    live = symbol_live()
    writer = LiveWriter(store, {"BTCUSDT": live}, lambda: T0 + 5)
    trade(live, T0, 100 * SCALE + 5)
    channel = store.keys.live_channel
    async with listening(store, channel) as queue:
        assert await writer.flush(write_keys=False) == 0
        assert await redis.exists("live_price:BTCUSDT", "live_candle:BTCUSDT:1m") == 0
        [batch] = await received(store, channel, queue)
        assert batch == {
            "time": T0 + 5,
            "prices": [{"symbol": "BTCUSDT", "price": "100.00000005", "time": T0}],
            "candles": [],  # candles go out with the key writes
        }

        assert await writer.flush(write_keys=True) == 2
        price = await json_at(redis, "live_price:BTCUSDT")
        assert price == {"symbol": "BTCUSDT", "price": "100.00000005", "time": T0}
        candle = await json_at(redis, "live_candle:BTCUSDT:1m")
        assert (candle["symbol"], candle["interval"], candle["time"]) == ("BTCUSDT", "1m", OPEN0)
        assert (candle["open"], candle["close"], candle["trades"]) == (
            "100.00000005",
            "100.00000005",
            1,
        )
        assert candle["is_incomplete"] is True and candle["source"] == "live"
        [batch] = await received(store, channel, queue)
        assert batch["prices"] == [] and batch["candles"] == [candle]

        assert await writer.flush(write_keys=True) == 0  # nothing changed: nothing sent
        assert await received(store, channel, queue) == []


async def test_keys_are_written_at_most_once_per_write_period(store: Store) -> None:
    live = symbol_live()
    writer = LiveWriter(
        store, {"BTCUSDT": live}, lambda: T0, write_period_ms=100, publish_period_ms=10
    )
    task = asyncio.create_task(writer.run())
    started = time.monotonic()
    try:
        for i in range(40):  # a trade every publish period
            trade(live, T0 + i, (100 + i) * SCALE)
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elapsed_ms = (time.monotonic() - started) * 1000
    key_writes = writer.keys_written // 2  # the candle and the price each time
    assert 2 <= key_writes <= elapsed_ms // 100 + 1
    assert writer.published >= 2 * key_writes  # prices went out in between


async def test_a_key_write_of_many_symbols_is_spread_over_flushes_while_prices_go_out_each(
    store: Store,
) -> None:
    # 200 symbols changed in one write period: the write goes 64 symbols a flush (each
    # symbol's candle published with its keys), every price in the first
    names = [f"S{n:03d}USDT" for n in range(200)]
    lives = {s: symbol_live(s) for s in names}
    writer = LiveWriter(
        store, lives, lambda: T0, write_period_ms=100, publish_period_ms=10, keys_per_flush=64
    )
    for n, live in enumerate(lives.values()):
        trade(live, T0, (100 + n) * SCALE)
    channel = store.keys.live_channel
    async with listening(store, channel) as queue:
        assert await writer.flush(write_keys=True) == 64 * 2  # a candle and a price each
        [first] = await received(store, channel, queue)
        assert {p["symbol"] for p in first["prices"]} == set(names)
        assert len(first["candles"]) == 64
        # the next flushes go on with the same key write, a write period or not
        assert [await writer.flush(write_keys=False) for _ in range(4)] == [128, 128, 16, 0]
        batches = await received(store, channel, queue)
    published = [c["symbol"] for b in [first, *batches] for c in b["candles"]]
    assert sorted(published) == names  # each symbol's candle once
    assert all(b["prices"] == [] for b in batches)  # no price changed since
    keys = [store.keys.live_candle(SeriesKey(s, M1)) for s in names]
    assert None not in await store.redis.mget(keys)


async def test_a_flush_writes_and_publishes_only_the_symbols_that_changed(store: Store) -> None:
    lives = {s: symbol_live(s) for s in ("BTCUSDT", "ETHUSDT", "BNBUSDT")}
    writer = LiveWriter(store, lives, lambda: T0)
    for n, live in enumerate(lives.values()):
        trade(live, T0, (100 + n) * SCALE)
    assert await writer.flush() == 6  # 3 symbols x (1 candle + 1 price)
    assert await writer.flush() == 0  # nothing changed: nothing written, nothing sent
    trade(lives["ETHUSDT"], T0 + 1, 200 * SCALE)
    channel = store.keys.live_channel
    async with listening(store, channel) as queue:
        assert await writer.flush() == 2
        [batch] = await received(store, channel, queue)
    assert [p["symbol"] for p in batch["prices"]] == ["ETHUSDT"]
    assert [c["symbol"] for c in batch["candles"]] == ["ETHUSDT"]
    value = await store.live_candle(SeriesKey("ETHUSDT", M1))
    assert value is not None and msgspec.json.decode(value)["close"] == "200.00000000"


async def test_one_message_per_flush_carries_every_changed_symbol(store: Store) -> None:
    intervals = (M1, INTERVALS["1h"])
    lives = {s: symbol_live(s, intervals) for s in ("BTCUSDT", "ETHUSDT")}
    writer = LiveWriter(store, lives, lambda: T0)
    for n, live in enumerate(lives.values()):
        trade(live, T0, (100 + n) * SCALE)
    channel = store.keys.live_channel
    async with listening(store, channel) as queue:
        assert await writer.flush() == 6  # 2 symbols x (2 candles + 1 price)
        [batch] = await received(store, channel, queue)
    assert {p["symbol"] for p in batch["prices"]} == {"BTCUSDT", "ETHUSDT"}
    assert {(c["symbol"], c["interval"]) for c in batch["candles"]} == {
        ("BTCUSDT", "1m"),
        ("BTCUSDT", "1h"),
        ("ETHUSDT", "1m"),
        ("ETHUSDT", "1h"),
    }


async def test_a_closed_candle_is_kept_in_live_closed_and_announced_at_once(
    store: Store, redis: aioredis.Redis
) -> None:
    live = symbol_live()
    writer = LiveWriter(store, {"BTCUSDT": live}, lambda: OPEN0 + 61_000)
    trade(live, OPEN0 + 1_000, 100 * SCALE)
    trade(live, OPEN0 + 61_000, 101 * SCALE)  # the first trade of the next minute
    assert [c.candle.open_ms for c in live.closed] == [OPEN0]
    channel = store.keys.closed_channel
    async with listening(store, channel) as queue:
        await writer.flush(write_keys=False)  # a close does not wait for the write period
        [announced] = await received(store, channel, queue)
    assert announced == {"closed": [{"interval": "1m", "open_ms": OPEN0, "symbols": ["BTCUSDT"]}]}
    [(member, score)] = await redis.zrange(store.keys.live_closed(BTC_1M), 0, -1, withscores=True)
    closed = msgspec.json.decode(member)
    assert score == OPEN0 and closed["time"] == OPEN0
    assert (closed["open"], closed["close"], closed["trades"]) == ("100.00000000",) * 2 + (1,)
    assert closed["is_incomplete"] is False and closed["confirmed"] is False
    assert live.closed == []  # handed over


async def test_a_failed_write_is_retried_with_the_newest_state(
    store: Store, redis: aioredis.Redis
) -> None:
    down = Store(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}"), Keys())
    live = symbol_live()
    writer = LiveWriter(down, {"BTCUSDT": live}, lambda: OPEN0 + 62_000)
    trade(live, OPEN0 + 1_000, 100 * SCALE)
    trade(live, OPEN0 + 61_000, 101 * SCALE)  # closes minute 0
    try:
        assert await writer.flush() == 0
        assert writer.errors == 1 and writer.flushes == 0
    finally:
        await down.redis.aclose()
    trade(live, OPEN0 + 62_000, 102 * SCALE)
    writer.store = store  # Redis is back
    assert await writer.flush() == 2
    price = await json_at(redis, "live_price:BTCUSDT")
    assert price == {"symbol": "BTCUSDT", "price": "102.00000000", "time": OPEN0 + 62_000}
    candle = await json_at(redis, "live_candle:BTCUSDT:1m")
    assert (candle["time"], candle["close"], candle["trades"]) == (
        OPEN0 + 60_000,
        "102.00000000",
        2,
    )
    assert candle["previous"]["time"] == OPEN0
    # the candle that closed during the outage was kept for the retry
    kept = await redis.zrange(store.keys.live_closed(BTC_1M), 0, -1, withscores=True)
    assert [score for _, score in kept] == [OPEN0]


async def test_a_symbol_removed_before_its_keys_were_written_is_not_written_later(
    store: Store, redis: aioredis.Redis
) -> None:
    """ETHUSDT's price went out (its keys wait for the next key write), then it left
    the market (the feed drops its state). A failed write and the recovery after it
    write what was waiting, but not ETHUSDT's: it stopped."""
    btc, eth = symbol_live(), symbol_live("ETHUSDT")
    writer = LiveWriter(store, {"BTCUSDT": btc, "ETHUSDT": eth}, lambda: T0 + 5)
    async with listening(store, store.keys.live_channel) as updates:
        trade(btc, T0, 100 * SCALE)
        await writer.flush()
        trade(eth, T0 + 1, 7 * SCALE)
        await writer._publish_prices()  # the price loop's message: keys not written yet
        assert [
            p["symbol"]
            for m in await received(store, store.keys.live_channel, updates)
            for p in m["prices"]
        ] == ["BTCUSDT", "ETHUSDT"]
        assert await redis.get("live_price:ETHUSDT") is None
        del writer.symbols["ETHUSDT"]  # as LiveFeed.remove_symbol does
        down = Store(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}"), Keys())
        writer.store = down
        trade(btc, T0 + 2, 101 * SCALE)
        try:
            await writer.flush()
            assert writer.errors == 1
        finally:
            await down.redis.aclose()
        writer.store = store  # Redis is back
        trade(btc, T0 + 3, 102 * SCALE)
        await writer.flush()
        messages = await received(store, store.keys.live_channel, updates)
    assert (await json_at(redis, "live_price:BTCUSDT"))["price"] == "102.00000000"
    assert await redis.get("live_price:ETHUSDT") is None
    assert await redis.get("live_candle:ETHUSDT:1m") is None
    assert [p["symbol"] for m in messages for p in m["prices"]] == ["BTCUSDT"]
    assert {c["symbol"] for m in messages for c in m["candles"]} == {"BTCUSDT"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with own_server(tmp_path) as s:
        yield s


async def test_while_redis_is_full_the_writer_backs_off_says_so_once_and_publishes_nothing(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="livecandle.live.writer")
    live = symbol_live()
    now = [OPEN0]
    async with client(server.url) as c:
        store = Store(c)
        writer = LiveWriter(store, {"BTCUSDT": live}, lambda: now[0])
        async with (
            listening(store, store.keys.live_channel) as updates,
            listening(store, store.keys.closed_channel) as closes,
        ):
            task = asyncio.create_task(writer.run())
            try:
                async with full(c):
                    await c.config_resetstat()
                    started_s = time.monotonic()
                    for i in range(300):  # 3 s of trades, 100 a second; minute 0 closes
                        now[0] = OPEN0 + 1_000 + i * 200
                        trade(live, now[0], (100 + i) * SCALE)
                        await asyncio.sleep(0.01)
                    refused = await command_stats(c, "set")
                    published = await command_stats(c, "publish")
                    assert writer.storage_error is not None
                    assert "maxmemory" in writer.storage_error
                    # every 10 ms before: ~300 attempts, ~300 publishes, ~300 log lines; now
                    # a few in the first second, then about one a second (2 keys each)
                    attempts = 5 + (time.monotonic() - started_s)
                    assert 1 <= writer.errors <= attempts
                    assert refused["rejected_calls"] <= 2 * attempts
                    assert published["calls"] <= 1  # at most the very first attempt's
                    assert len(await drain(updates)) <= 1 and closes.empty()
                    await c.config_resetstat()
                # Redis has room again: the newest state is written and published once
                async with asyncio.timeout(5):
                    batch = msgspec.json.decode((await updates.get())[1])
                assert writer.storage_error is None
                await asyncio.sleep(0.3)  # nothing changed since: nothing more goes out
                assert await command_stats(c, "set") == {"calls": 2, "rejected_calls": 0}
                assert (await command_stats(c, "publish"))["calls"] == 2  # update + close
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            newest = "399.00000000"
            assert updates.empty()
            assert batch["prices"][0]["price"] == newest
            assert batch["candles"][0]["close"] == newest
            announced = [decode_closings(m) for _, m in await drain(closes)]
            assert announced == [[(BTC_1M, OPEN0)]]
        assert (await json_at(c, "live_price:BTCUSDT"))["price"] == newest
        candle = await json_at(c, "live_candle:BTCUSDT:1m")
        assert (candle["time"], candle["close"]) == (OPEN0 + 60_000, newest)
        kept = await c.zrange(store.keys.live_closed(BTC_1M), 0, -1, withscores=True)
        assert [score for _, score in kept] == [OPEN0]
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(said) == 2, said  # once when it starts failing, once when it recovers
    assert said[0][0] == "ERROR" and "maxmemory" in said[0][1]
    assert said[1][0] == "WARNING" and "succeed again" in said[1][1]


async def drain(queue: Messages) -> list[tuple[str, bytes]]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def test_a_final_candle_is_stored_as_official_and_replaces_a_stale_rest_row(
    store: Store,
) -> None:
    live = symbol_live()
    now_ms = OPEN0 + 60_000 + 1_000  # one second after the close
    writer = LiveWriter(store, {"BTCUSDT": live}, lambda: now_ms, rest_lag_ms=30_000)
    stale, final = kline_member(OPEN0, close="99.00000000"), kline_member(OPEN0)
    await store.write_candles(BTC_1M, [(OPEN0, stale)], 1)  # REST, read while it lagged
    live.add_final(FinalCandle(M1, OPEN0, OPEN0 + 59_999, final))
    await writer.flush()
    assert await store.members(BTC_1M) == [(final, float(OPEN0))]
    assert (writer.finals_stored, writer.finals_replaced) == (0, 1)
    nxt = OPEN0 + 60_000
    live.add_final(FinalCandle(M1, nxt, nxt + 59_999, kline_member(nxt)))
    await writer.flush()
    assert (writer.finals_stored, writer.finals_replaced) == (1, 1)
    assert (await store.meta(BTC_1M)).latest == nxt


async def test_a_late_final_candle_does_not_replace_a_reconciled_row(store: Store) -> None:
    live = symbol_live()
    now_ms = OPEN0 + 60_000 + 31_000  # past the 30 s REST lag window
    writer = LiveWriter(store, {"BTCUSDT": live}, lambda: now_ms, rest_lag_ms=30_000)
    settled = kline_member(OPEN0, close="99.00000000")
    await store.write_candles(BTC_1M, [(OPEN0, settled)], 1)
    live.add_final(FinalCandle(M1, OPEN0, OPEN0 + 59_999, kline_member(OPEN0)))
    await writer.flush()
    assert await store.members(BTC_1M) == [(settled, float(OPEN0))]
    assert (writer.finals_replaced, writer.finals_kept) == (0, 1)


def _market_with_finals(n: int) -> tuple[list[str], dict[str, SymbolLive]]:
    """``n`` symbols, each with its 1m final candle of OPEN0 waiting to be stored."""
    names = [f"S{i:04d}USDT" for i in range(n)]
    lives = {name: symbol_live(name) for name in names}
    for live in lives.values():
        live.add_final(FinalCandle(M1, OPEN0, OPEN0 + 59_999, kline_member(OPEN0)))
    return names, lives


async def test_a_running_writer_stores_the_finals_beside_its_live_flushes(
    store: Store,
) -> None:
    n = 2_500
    names, lives = _market_with_finals(n)
    now_ms = OPEN0 + 61_000
    writer = LiveWriter(store, lives, lambda: now_ms)
    trade(lives[names[0]], now_ms, 100 * SCALE)  # and a live trade to publish
    async with (
        listening(store, store.keys.klines_updated_channel) as updated,
        listening(store, store.keys.live_channel) as live_updates,
    ):
        task = asyncio.create_task(writer.run())
        try:
            stored: set[str] = set()
            async with asyncio.timeout(30):
                while len(stored) < n:
                    _, raw = await updated.get()
                    stored.add(msgspec.json.decode(raw)["symbol"])
                _, raw = await live_updates.get()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert stored == set(names) and writer.finals_stored == n
    assert msgspec.json.decode(raw)["prices"][0]["symbol"] == names[0]
    for name in (names[0], names[n // 2], names[-1]):
        assert await store.members(SeriesKey(name, M1)) == [(kline_member(OPEN0), float(OPEN0))]


async def _round_trips_storing(store: Store, writer: LiveWriter, n: int) -> list[int]:
    """Runs ``writer`` until it has stored ``n`` finals: how many each round trip took."""
    round_trips: list[int] = []
    all_stored = asyncio.Event()
    write_officials = store.write_officials

    async def recorded(writes: Any, now_ms: int) -> Any:
        round_trips.append(len(writes))
        results = await write_officials(writes, now_ms)
        if sum(round_trips) == n:
            all_stored.set()
        return results

    store.write_officials = recorded  # type: ignore[method-assign]
    task = asyncio.create_task(writer.run())
    try:
        async with asyncio.timeout(30):
            await all_stored.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return round_trips


async def test_a_running_writer_stores_many_finals_in_bounded_round_trips(
    store: Store,
) -> None:
    n = 2_500
    names, lives = _market_with_finals(n)
    now_ms = OPEN0 + 61_000
    writer = LiveWriter(store, lives, lambda: now_ms, finals_per_round_trip=1_000)
    round_trips = await _round_trips_storing(store, writer, n)
    # Redis serves the live flushes' pipelines between them (none waits behind all)
    assert round_trips == [1_000, 1_000, 500] and writer.finals_stored == n
    for name in (names[0], names[n // 2], names[-1]):
        assert await store.members(SeriesKey(name, M1)) == [(kline_member(OPEN0), float(OPEN0))]


async def test_a_running_writer_reads_no_more_than_a_few_hundred_finals_a_round_trip(
    store: Store,
) -> None:
    """Packing a round trip's finals, then reading their replies, holds the event loop
    (every live price) for as long: 1,000 at a time was ~20-40 ms at 00:00 UTC."""
    n = 2_500
    _, lives = _market_with_finals(n)
    now_ms = OPEN0 + 61_000
    writer = LiveWriter(store, lives, lambda: now_ms)  # the default
    round_trips = await _round_trips_storing(store, writer, n)
    assert max(round_trips) <= 400, round_trips
    assert writer.finals_stored == n


async def test_a_running_writer_publishes_prices_while_a_flush_is_under_way(store: Store) -> None:
    """A flush's round trip can be long (at 00:00 UTC the whole market's closes and
    candles, megabytes sent between the turns of a busy event loop): the prices that
    change meanwhile go out on their own, in order, without waiting for it."""
    live = symbol_live()
    writer = LiveWriter(store, {"BTCUSDT": live}, lambda: T0)
    write_live = store.write_live
    slow, under_way, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[int] = []  # messages received when the slow write started, and ended

    async def slowed(candles: Any, *args: Any) -> None:
        candles = list(candles)
        if candles and slow.is_set() and not seen:
            seen.append(updates.qsize())
            under_way.set()
            await asyncio.sleep(0.5)
            seen.append(updates.qsize())
            done.set()
        await write_live(candles, *args)

    store.write_live = slowed  # type: ignore[method-assign]
    async with listening(store, store.keys.live_channel) as updates:
        task = asyncio.create_task(writer.run())
        try:
            trade(live, T0, 100 * SCALE)
            async with asyncio.timeout(5):
                await updates.get()  # the first flush: its keys, candle and price
                slow.set()
                trade(live, T0 + 1, 101 * SCALE)  # the next key write is slow
                await under_way.wait()
                for i in range(2, 12):
                    trade(live, T0 + i, (100 + i) * SCALE)
                    await asyncio.sleep(0.02)
                await done.wait()
                messages = await received(store, store.keys.live_channel, updates)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    during = messages[seen[0] : seen[1]] if len(seen) == 2 else []
    assert len(during) >= 3
    assert all(m["candles"] == [] for m in during)
    shown = [int(p["price"].split(".")[0]) for m in during for p in m["prices"]]
    assert shown == sorted(shown) and shown[-1] >= 105


async def test_a_price_published_before_older_candles_landed_goes_out_again_after_them(
    store: Store,
) -> None:
    """Trades during a flush's round trip: their price goes out first (the price loop
    does not wait), then the flush's candles, whose close is older. The newest price is
    published again at once after them (not left to the next key write, a write period
    later): a subscriber does not keep a close older than a price it was shown."""
    live = symbol_live()
    writer = LiveWriter(store, {"BTCUSDT": live}, lambda: T0, write_period_ms=300)
    write_live = store.write_live
    slow, under_way, priced = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slowed(candles: Any, *args: Any) -> None:
        candles = list(candles)
        if candles and slow.is_set() and not priced.is_set():
            under_way.set()
            await priced.wait()  # a newer price was published meanwhile
        await write_live(candles, *args)

    def decoded(item: tuple[str, bytes]) -> Any:
        return msgspec.json.decode(item[1])

    def shown(message: Any) -> list[str]:
        return [p["price"] for p in message["prices"]]

    store.write_live = slowed  # type: ignore[method-assign]
    async with listening(store, store.keys.live_channel) as updates:
        task = asyncio.create_task(writer.run())
        try:
            async with asyncio.timeout(5):
                trade(live, T0, 100 * SCALE)
                assert shown(decoded(await updates.get())) == ["100.00000000"]  # 1st write
                slow.set()
                trade(live, T0 + 1, 101 * SCALE)  # the next key write's candles: close 101
                await under_way.wait()
                trade(live, T0 + 2, 102 * SCALE)  # while they are on their way
                while "102.00000000" not in shown(decoded(await updates.get())):
                    pass
                priced.set()
                while not (candles := decoded(await updates.get()))["candles"]:
                    pass
                after = decoded(await updates.get())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert {c["close"] for c in candles["candles"]} == {"101.00000000"}
    assert after["candles"] == [] and shown(after) == ["102.00000000"]
    assert writer.prices_republished == 1


async def test_a_running_writer_stores_finals_while_a_flush_is_under_way(store: Store) -> None:
    """The exchange's final candles are taken straight from the symbols by the finals'
    loop: they do not wait for a long flush (at 00:00 UTC, the whole market's)."""
    live, other = symbol_live(), symbol_live("ETHUSDT")
    writer = LiveWriter(store, {"BTCUSDT": live, "ETHUSDT": other}, lambda: OPEN0 + 61_000)
    write_live = store.write_live
    slow, under_way, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    stored_during: list[bool] = []

    async def slowed(candles: Any, *args: Any) -> None:
        candles = list(candles)
        if candles and slow.is_set() and not done.is_set():
            under_way.set()
            await asyncio.sleep(0.5)
            stored_during.append(bool(await store.members(SeriesKey("ETHUSDT", M1))))
            done.set()
        await write_live(candles, *args)

    store.write_live = slowed  # type: ignore[method-assign]
    task = asyncio.create_task(writer.run())
    try:
        async with asyncio.timeout(5):
            slow.set()
            trade(live, OPEN0 + 1_000, 100 * SCALE)  # the next key write is slow
            await under_way.wait()
            other.add_final(FinalCandle(M1, OPEN0, OPEN0 + 59_999, kline_member(OPEN0)))
            await done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert stored_during == [True] and writer.finals_stored == 1
