"""The 00:00 UTC boundary (issue 9): every interval of every followed symbol closes at
once. The closed live candles are written many series per script call and announced in
one ``candle_closed`` message; each series is stored as a call of its own stored it, a
stale lease epoch is still refused, and the fetcher checks every candle named."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.clock import ManualClock
from livecandle.domain.intervals import DAY_MS, INTERVALS, Interval
from livecandle.domain.model import SCALE, SeriesKey
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.live.writer import LiveWriter, SymbolLive
from livecandle.official.background_fetcher import BackgroundFetcher
from livecandle.store import ClosedLive, Keys, Store, scripts
from livecandle.store.closings import decode_closings
from livecandle.store.fencing import write_live_fenced
from livecandle.store.keys import live_candle_ttl_ms
from livecandle.store.store import (
    LIVE_CLOSED_PER_CALL,
    OFFICIALS_PER_CALL,
    SET_LIVE_PER_CALL,
    LiveWrite,
    OfficialWrite,
)
from tests.builders import kline_member
from tests.integration.test_live_writer import listening, received

MIDNIGHT = 1_700_006_400_000  # 2023-11-15 00:00 UTC
assert MIDNIGHT % DAY_MS == 0
CLOSING = [INTERVALS[i] for i in ("1m", "3m", "5m", "15m", "1h", "1d")]
SYMBOLS = [f"S{n:03d}USDT" for n in range(40)]  # 240 series close at once


@contextlib.asynccontextmanager
async def script_calls(redis: aioredis.Redis) -> AsyncIterator[list[list[str]]]:
    """Each script call Redis runs meanwhile (MONITOR): the names of the commands it ran,
    in order. One long call holds Redis, every other client waits that long."""
    calls: list[list[str]] = []
    end = "script-calls-end"
    async with redis.monitor() as monitor:
        yield calls
        await redis.echo(end)
        assert monitor.connection is not None
        async with asyncio.timeout(30):
            while True:
                line = await monitor.connection.read_response()
                assert isinstance(line, bytes)
                client, _, command = line.partition(b"] ")
                name = command[1 : command.index(b'"', 1)].decode().upper()
                if client.endswith(b" lua"):
                    calls[-1].append(name)
                elif name in ("EVAL", "EVALSHA"):
                    calls.append([])
                elif name == "ECHO" and end.encode() in command:
                    break


class RecordingFetcher(BackgroundFetcher):
    """The fetcher, noting each after-close check it is asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requested: dict[SeriesKey, int | None] = {}
        self.all_requested = asyncio.Event()

    def request(self, series: SeriesKey, open_ms: int | None = None) -> None:
        self.requested[series] = open_ms
        if len(self.requested) == len(self.series):
            self.all_requested.set()
        super().request(series, open_ms)


async def test_a_whole_market_close_is_stored_per_series_announced_once_and_checked(
    store: Store, redis: aioredis.Redis
) -> None:
    lives = {s: SymbolLive(s, LiveCandleBuilder(CLOSING, ManualClock(MIDNIGHT))) for s in SYMBOLS}
    for n, (symbol, live) in enumerate(lives.items()):
        for time_ms, price in ((MIDNIGHT - 1_000, 100 + n), (MIDNIGHT, 200 + n)):
            closed = live.builder.add(time_ms, price * SCALE, SCALE)
            live.traded(time_ms)
            if closed:
                live.add_closed(closed)
        assert len(live.closed) == len(CLOSING), symbol
    every = [SeriesKey(s, i) for s in SYMBOLS for i in CLOSING]
    writer = LiveWriter(store, lives, lambda: MIDNIGHT + 5)
    rest = BinanceRest("http://127.0.0.1:9")  # never asked: only the checks are looked at
    fetcher = RecordingFetcher(store, rest, every, reconcile=False)
    listener = asyncio.create_task(fetcher.listen_closed())
    try:
        async with asyncio.timeout(5):
            await fetcher.listening.wait()
        channel = store.keys.closed_channel
        async with listening(store, channel) as queue:
            await writer.flush(write_keys=False)  # the close goes out at once
            [message] = await received(store, channel, queue)  # one message for all
        async with asyncio.timeout(5):
            await fetcher.all_requested.wait()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    opens = {s: s.interval.open_of(MIDNIGHT - 1_000) for s in every}
    assert sorted(decode_closings(msgspec.json.encode(message)), key=str) == sorted(
        opens.items(), key=str
    )
    assert fetcher.requested == opens
    pipe = redis.pipeline(transaction=False)
    for s in every:
        pipe.zrange(store.keys.live_closed(s), 0, -1, withscores=True)
        pipe.pttl(store.keys.live_closed(s))
    found = await pipe.execute()
    for n, s in enumerate(every):
        [(member, score)], ttl_ms = found[2 * n], found[2 * n + 1]
        candle = msgspec.json.decode(member)
        price = f"{100 + SYMBOLS.index(s.symbol)}.00000000"
        assert score == opens[s] and candle["time"] == opens[s], s
        assert (candle["open"], candle["close"], candle["trades"]) == (price, price, 1), s
        assert ttl_ms > DAY_MS - 10_000, s


def _closings(symbols: list[str], opens_ms: list[int], tag: str) -> list[ClosedLive]:
    return [
        ClosedLive(SeriesKey(s, INTERVALS["1m"]), o, msgspec.json.encode({"t": o, "v": tag}))
        for s in symbols
        for o in opens_ms
    ]


async def test_closed_live_candles_of_many_series_are_stored_as_a_call_per_series_stores_them(
    redis: aioredis.Redis,
) -> None:
    """The same writes and stored state, once through the one-call-per-series script (the
    cluster's path) and once in batches; every series ends up the same, including what
    the kept rows replace and what a stored official row prunes."""
    t = MIDNIGHT
    symbols = [f"B{n:04d}USDT" for n in range(LIVE_CLOSED_PER_CALL + 50)]  # two calls
    before = _closings(symbols[::3], [t - 60_000, t], "old")  # some replaced, some pruned
    closing = _closings(symbols, [t], "new") + _closings(symbols[::7], [t + 60_000], "next")
    # a newline in a value (never compact JSON): that batch goes a call per series
    closing.append(ClosedLive(SeriesKey(symbols[-1], INTERVALS["1m"]), t + 120_000, b"{\n}"))
    one_by_one, batched = Store(redis, Keys(prefix="a:")), Store(redis, Keys(prefix="b:"))
    for store in (one_by_one, batched):
        for s in symbols[::5]:  # the official row of t - 60s is stored: pruned
            await store.write_candles(
                SeriesKey(s, INTERVALS["1m"]), [(t - 60_000, kline_member(t - 60_000))], 1
            )
        await store.write_live([], closed_candles=before)
    for keys, args in one_by_one._closed_writes(closing):
        await redis.eval(scripts.WRITE_LIVE_CLOSED, len(keys), *keys, *args)
    await batched.write_live([], closed_candles=closing)
    pipe = redis.pipeline(transaction=False)
    for s in symbols:
        for store in (one_by_one, batched):
            pipe.zrange(
                store.keys.live_closed(SeriesKey(s, INTERVALS["1m"])), 0, -1, withscores=True
            )
    found = await pipe.execute()
    pairs = list(zip(found[::2], found[1::2], strict=True))
    assert all(a == b for a, b in pairs), [
        s for s, (a, b) in zip(symbols, pairs, strict=True) if a != b
    ]
    assert found[-1][-1] == (b"{\n}", t + 120_000)
    assert found[0] == [  # t - 60 s pruned (its official row is stored), t replaced
        (b'{"t":1700006400000,"v":"new"}', t),
        (b'{"t":1700006460000,"v":"next"}', t + 60_000),
    ]
    assert found[6] == [  # t - 60 s kept (no official row), t replaced
        (b'{"t":1700006340000,"v":"old"}', t - 60_000),
        (b'{"t":1700006400000,"v":"new"}', t),
    ]


async def test_a_stale_lease_epoch_refuses_its_closed_candles_in_a_whole_market_write(
    store: Store, redis: aioredis.Redis
) -> None:
    symbols = [f"F{n:03d}USDT" for n in range(300)]
    for s in symbols:
        await redis.set(store.keys.lease_epoch(s), 2 if s == "F007USDT" else 1)
    closing = _closings(symbols, [MIDNIGHT], "x")
    refused = await write_live_fenced(
        store, dict.fromkeys(symbols, 1), {}, [], closed_candles=closing
    )
    assert refused == {"F007USDT"}
    pipe = redis.pipeline(transaction=False)
    for s in symbols:
        pipe.zcard(store.keys.live_closed(SeriesKey(s, INTERVALS["1m"])))
    kept = dict(zip(symbols, await pipe.execute(), strict=True))
    assert kept == {s: 0 if s == "F007USDT" else 1 for s in symbols}


def _closed_at_midnight(
    symbols: Sequence[str], intervals: Sequence[Interval]
) -> dict[str, SymbolLive]:
    """Each symbol traded a second before 00:00 and at 00:00 (at 100, 101, ... in
    order): every interval's candle closed, not yet written."""
    lives = {s: SymbolLive(s, LiveCandleBuilder(intervals, ManualClock(MIDNIGHT))) for s in symbols}
    for n, live in enumerate(lives.values()):
        for time_ms in (MIDNIGHT - 1_000, MIDNIGHT):
            closed = live.builder.add(time_ms, (100 + n) * SCALE, SCALE)
            live.traded(time_ms)
            if closed:
                live.add_closed(closed)
    return lives


async def test_a_whole_market_close_is_spread_over_flushes_each_carrying_every_price(
    store: Store, redis: aioredis.Redis
) -> None:
    symbols = SYMBOLS[:6]
    closing = CLOSING[:2]
    lives = _closed_at_midnight(symbols, closing)
    # the closes of two symbols a flush
    writer = LiveWriter(store, lives, lambda: MIDNIGHT + 5, closes_per_flush=2 * len(closing))
    live_channel, closed_channel = store.keys.live_channel, store.keys.closed_channel
    stored_before: list[set[str]] = []
    async with (
        listening(store, live_channel) as batches,
        listening(store, closed_channel) as closings,
    ):
        for _ in range(3):
            await writer.flush(write_keys=False)
            stored_before.append(
                {
                    s
                    for s in symbols
                    if await redis.exists(store.keys.live_closed(SeriesKey(s, closing[0])))
                }
            )
        published = await received(store, live_channel, batches)
        announced = await received(store, closed_channel, closings)
    assert len(published) == 3
    # every price in the first flush; each symbol's candles in the flush of its closes
    assert {p["symbol"] for p in published[0]["prices"]} == set(symbols)
    took = [{c["symbol"] for c in batch["candles"]} for batch in published]
    assert [len(t) for t in took] == [2, 2, 2] and set().union(*took) == set(symbols)
    for batch in published:
        assert len(batch["candles"]) == 2 * len(closing)
        assert all(c["time"] == MIDNIGHT and c["previous"] is not None for c in batch["candles"])
    # a symbol's closed candles are stored by the flush that publishes its new period
    assert stored_before == [took[0], took[0] | took[1], set(symbols)]
    # each close announced once, in the flush that took it
    named = [decode_closings(msgspec.json.encode(m)) for m in announced]
    assert [{s.symbol for s, _ in n} for n in named] == took
    every = sorted((str(s), o) for n in named for s, o in n)
    assert every == sorted(
        (str(SeriesKey(s, i)), i.open_of(MIDNIGHT - 1_000)) for s in symbols for i in closing
    )
    for s in symbols:
        for i in closing:
            [(member, score)] = await redis.zrange(
                store.keys.live_closed(SeriesKey(s, i)), 0, -1, withscores=True
            )
            assert score == i.open_of(MIDNIGHT - 1_000)
            assert msgspec.json.decode(member)["close"] == f"{100 + symbols.index(s)}.00000000"


async def test_a_whole_market_close_takes_a_few_hundred_closes_a_flush(
    store: Store, redis: aioredis.Redis
) -> None:
    """Encoding a flush's closes (and its symbols' new candles) holds the event loop, every
    price with it: 1,200 closes a flush were 60-120 ms at 00:00 UTC. Each is stored, and
    published with its symbol's new period, by a later flush."""
    symbols = [f"W{n:04d}USDT" for n in range(300)]
    lives = _closed_at_midnight(symbols, CLOSING)
    writer = LiveWriter(store, lives, lambda: MIDNIGHT + 5)  # the default
    async with listening(store, store.keys.live_channel) as batches:
        for _ in range(len(symbols)):
            await writer.flush(write_keys=False)
            if not any(live.closed for live in lives.values()):
                break
        published = await received(store, store.keys.live_channel, batches)
    closes = [len(b["candles"]) for b in published if b["candles"]]  # a close each
    assert max(closes) <= 300, closes
    assert sum(closes) == len(symbols) * len(CLOSING)
    pipe = redis.pipeline(transaction=False)
    for s in symbols:
        for i in CLOSING:
            pipe.zcard(store.keys.live_closed(SeriesKey(s, i)))
    assert await pipe.execute() == [1] * len(symbols) * len(CLOSING)


async def test_no_single_call_sets_more_than_a_share_of_a_whole_market_live_write(
    store: Store, redis: aioredis.Redis
) -> None:
    symbols = [f"K{n:04d}USDT" for n in range(1_650)]  # the calls split TTL groups
    writes = [
        LiveWrite(SeriesKey(s, i), b'{"s":"%b","i":"%b"}' % (s.encode(), i.name.encode()))
        for s in symbols
        for i in CLOSING
    ]
    prices = [(s, b'{"p":"%b"}' % s.encode()) for s in symbols]
    async with script_calls(redis) as calls:
        await store.write_live(writes, prices)
    assert sum(len(c) for c in calls) == len(writes) + len(prices)
    assert all(set(c) == {"SET"} and len(c) <= 500 for c in calls), [len(c) for c in calls]
    assert max(len(c) for c in calls) <= SET_LIVE_PER_CALL
    # every key set, with its interval's TTL (the calls split a TTL's group too)
    pipe = redis.pipeline(transaction=False)
    for w in writes:
        pipe.get(store.keys.live_candle(w.series))
        pipe.pttl(store.keys.live_candle(w.series))
    for s, _ in prices:
        pipe.get(store.keys.live_price(s))
        pipe.pttl(store.keys.live_price(s))
    found = await pipe.execute()
    assert found[0::2] == [w.value for w in writes] + [p for _, p in prices]
    ttls = found[1::2]
    for w, ttl_ms in zip(writes, ttls, strict=False):
        expected = live_candle_ttl_ms(w.series.interval)
        assert expected - 10_000 < ttl_ms <= expected, w.series
    assert all(DAY_MS - 10_000 < t <= DAY_MS for t in ttls[len(writes) :])


async def test_no_single_call_stores_more_than_a_share_of_a_whole_market_of_final_candles(
    store: Store, redis: aioredis.Redis
) -> None:
    every = [SeriesKey(f"O{n:04d}USDT", i) for n in range(1_600) for i in CLOSING]
    opens = {s: s.interval.open_of(MIDNIGHT - 1_000) for s in every}
    writes = [
        OfficialWrite(s, [(opens[s], kline_member(opens[s]))], opens[s], opens[s]) for s in every
    ]
    async with script_calls(redis) as calls:
        results = await store.write_officials(writes, MIDNIGHT + 1_000)
    assert [r.added for r in results] == [1] * len(every)
    per_call = [c.count("PUBLISH") for c in calls]  # each series' notice
    assert sum(per_call) == len(every)
    assert max(per_call) <= 50, per_call
    assert max(per_call) <= OFFICIALS_PER_CALL
    metas = await store.metas(every)
    assert [m.latest for m in metas] == [opens[s] for s in every]


async def test_no_single_call_keeps_more_than_a_share_of_a_whole_market_of_closed_candles(
    store: Store, redis: aioredis.Redis
) -> None:
    every = [SeriesKey(f"C{n:04d}USDT", i) for n in range(1_600) for i in CLOSING]
    opens = {s: s.interval.open_of(MIDNIGHT - 1_000) for s in every}
    closed = [ClosedLive(s, opens[s], b'{"t":%d}' % opens[s]) for s in every]
    async with script_calls(redis) as calls:
        await store.write_live([], closed_candles=closed)
    per_call = [c.count("ZADD") for c in calls]  # a closed candle a series
    assert sum(per_call) == len(every)
    assert max(per_call) <= 150, per_call
    assert max(per_call) <= LIVE_CLOSED_PER_CALL
    pipe = redis.pipeline(transaction=False)
    for s in every:
        pipe.zrange(store.keys.live_closed(s), 0, -1, withscores=True)
    found = await pipe.execute()
    assert found == [[(b'{"t":%d}' % opens[s], opens[s])] for s in every]
