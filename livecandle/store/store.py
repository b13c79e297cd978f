"""The Store: the one object that issues Redis commands for livecandle."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

import msgspec
import redis.asyncio as aioredis

from livecandle.domain.intervals import parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.domain.universe import SymbolEntry
from livecandle.store import cluster, scripts
from livecandle.store.keys import LIVE_CLOSED_MAX, LIVE_PRICE_TTL_MS, Keys, live_candle_ttl_ms
from livecandle.store.probe import RedisProbe

_json = msgspec.json.Encoder()

# how long one wait for a pub/sub message lasts; any length works (silence is not an
# error), a short one lets the health check's PING go out on an idle subscription
LISTEN_POLL_S = 1.0
# a PING's good answer serves the health checks of the next second too: an unauthenticated
# /healthz flood must not open a Redis connection per request
PING_REUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class Meta:
    earliest: int | None = None
    latest: int | None = None
    count: int = 0
    updated_ms: int | None = None
    last_error: str | None = None

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> Meta:
        def num(name: bytes) -> int | None:
            v = h.get(name)
            return int(float(v)) if v is not None else None

        err = h.get(b"last_error")
        return cls(
            earliest=num(b"earliest"),
            latest=num(b"latest"),
            count=num(b"count") or 0,
            updated_ms=num(b"updated_ms"),
            last_error=err.decode() if err else None,
        )


# the open times a row may replace a stored one in, by default: all of them
ANY_OPEN_MS = 1 << 62


@dataclass(frozen=True, slots=True)
class WriteResult:
    added: int
    replaced: int
    unchanged: int
    latest: int | None
    count: int
    kept: int = 0  # rows that differ from the stored one and were not let replace it
    replaced_opens: tuple[int, ...] = ()
    # of ``added``: rows outside the replace window, that filled a missing open time (a
    # REST row of a just-closed candle the stream's final candle had not stored yet)
    filled: int = 0


@dataclass(frozen=True, slots=True)
class PackedRows:
    """Official rows as ``WRITE_CANDLES`` takes them: ``count`` rows, their open times
    as decimal ints separated by spaces, their members each followed by a newline. A
    caller that has its rows in one piece (a klines page) packs them once, without a
    Python object per row (``pack_rows`` packs ``(open_ms, member)`` pairs)."""

    count: int
    opens: bytes
    members: bytes

    def __len__(self) -> int:
        return self.count


# ``(open_ms, member)`` pairs, or the same rows packed
Rows = Sequence[tuple[int, bytes]] | PackedRows


def pack_rows(rows: Rows) -> PackedRows:
    if isinstance(rows, PackedRows):
        return rows
    return PackedRows(
        len(rows),
        " ".join([str(open_ms) for open_ms, _ in rows]).encode(),
        b"".join([member + b"\n" for _, member in rows]),
    )


@dataclass(frozen=True, slots=True)
class OfficialWrite:
    """Official rows of one series for ``Store.write_officials``: ``(open_ms, member)``
    pairs; a row replaces a different stored one only if its open time is in
    ``[replace_from_ms, replace_until_ms]``, else it only fills a missing open time."""

    series: SeriesKey
    rows: Rows
    replace_from_ms: int = -ANY_OPEN_MS
    replace_until_ms: int = ANY_OPEN_MS


def _write_result(res: Sequence[Any]) -> WriteResult:
    latest = int(float(res[3])) if res[3] else None
    return WriteResult(
        int(res[0]),
        int(res[1]),
        int(res[2]),
        latest,
        int(res[4]),
        int(res[5]),
        tuple(int(o) for o in res[6]),
        int(res[7]),
    )


# Series per call of the scripts that write many series at once. One call holds Redis
# (every other client: the web's reads, the prices' publishes) for as long as it runs;
# the calls of a round trip are still sent in one pipeline, and Redis serves the other
# clients between them. At 00:00 UTC (the whole market's 9,600 closes at once, on 2
# busy cores) calls of 200 final candles took 15-50 ms each (SLOWLOG), of 500 closed
# live candles up to 17 ms, a SET_LIVE of a flush's ~3,000 keys up to 23 ms.
OFFICIALS_PER_CALL = 40  # WRITE_OFFICIALS (~2-6 ms)
LIVE_CLOSED_PER_CALL = 120  # WRITE_LIVE_CLOSED_MANY (~2-4 ms)
SET_LIVE_PER_CALL = 400  # live keys per SET_LIVE call (~2-3 ms)
LIVE_NAMES_KEPT = 100_000  # live_candle key names remembered (the market's series)


@dataclass(frozen=True, slots=True)
class ChartRead:
    """Official members (raw JSON, ascending; None when the caller's cached version is
    still current), ``klines_meta.latest``, the live value, the series' version and the
    closed live candles after ``latest`` (raw JSON, ascending)."""

    members: list[bytes] | None
    latest: int | None
    live: bytes | None
    version: bytes
    closed: list[bytes] = field(default_factory=list)


class LiveWrite(NamedTuple):
    """One ``live_candle`` value to store and publish (a tuple: the live writer makes
    thousands a second, and a frozen dataclass costs several times as much to build)."""

    series: SeriesKey
    value: bytes


@dataclass(frozen=True, slots=True)
class ClosedLive:
    """A closed live candle, kept (``live_closed``) until its official candle is stored."""

    series: SeriesKey
    open_ms: int
    value: bytes


class Store:
    def __init__(self, redis: aioredis.Redis, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self._write = redis.register_script(scripts.WRITE_CANDLES)
        self._read = redis.register_script(scripts.READ_WITH_LIVE)
        self._remove = redis.register_script(scripts.REMOVE_MEMBERS)
        self._write_closed = redis.register_script(scripts.WRITE_LIVE_CLOSED)
        self._live_names: dict[SeriesKey, str] = {}  # live_candle key of each series
        # each series' own fields of a WRITE_OFFICIALS record (its keys; the channel and
        # its names), built once
        self._official_heads: dict[SeriesKey, tuple[bytes, bytes]] = {}
        self._cluster = cluster.is_cluster(redis)
        self.replication = cluster.Replication()  # used on a cluster only
        self._probe: RedisProbe | Literal[False] | None = None  # False: none possible
        self._pinging: asyncio.Future[float] | None = None
        self._last_ping: tuple[float, asyncio.Future[float]] | None = None

    # -- official candles -------------------------------------------------------------

    async def write_candles(
        self,
        series: SeriesKey,
        rows: Rows,
        now_ms: int,
        gaps: Sequence[tuple[int, int]] = (),
        replace_from_ms: int = -ANY_OPEN_MS,
        replace_until_ms: int = ANY_OPEN_MS,
    ) -> WriteResult:
        """Atomically store ``(open_ms, kline JSON)`` rows (or the same ``PackedRows``)
        and known exchange gaps.

        One member per open time: equal rows are no-ops, changed rows replace the old
        member if their open time is in ``[replace_from_ms, replace_until_ms]`` (else the
        stored one is kept: the row only fills a missing open time); ``klines_meta`` is
        updated and ``klines_updated`` published on change.
        """
        args = self._write_args(series, rows, now_ms, gaps, replace_from_ms, replace_until_ms)
        keys = self._write_keys(series)
        if self._cluster:  # answered once a replica has it too (cluster.pipelined)
            op = _script_op(self._write, keys, args)
            return _write_result((await self._pipelined_on_cluster([op], keys[:1]))[0])
        res = await self._write(keys=keys, args=args)
        return _write_result(res)

    async def write_officials(
        self, writes: Sequence[OfficialWrite], now_ms: int
    ) -> list[WriteResult]:
        """``write_candles`` of many series in one pipelined round trip (the final
        candles of every followed series close together at 00:00 UTC)."""
        if not writes:
            return []
        if self._cluster:  # the series' keys are in many slots: a batch per master
            ops = [
                _script_op(
                    self._write,
                    self._write_keys(w.series),
                    self._write_args(
                        w.series, w.rows, now_ms, (), w.replace_from_ms, w.replace_until_ms
                    ),
                )
                for w in writes
            ]
            replicated = [self.keys.klines(w.series) for w in writes]
            done = await self._pipelined_on_cluster(ops, replicated)
            return [_write_result(res) for res in done]
        async with self.redis.pipeline(transaction=False) as pipe:  # reset if cancelled
            # a call per OFFICIALS_PER_CALL series: one call holds Redis that long
            for at in range(0, len(writes), OFFICIALS_PER_CALL):
                record = self._official_record
                records = [record(w, now_ms) for w in writes[at : at + OFFICIALS_PER_CALL]]
                pipe.eval(scripts.WRITE_OFFICIALS, 0, b"\x1e".join(records))
            replies = await pipe.execute()
        return [_write_result(res) for reply in replies for res in reply]

    def _official_record(self, w: OfficialWrite, now_ms: int) -> bytes:
        """One series' ``WRITE_OFFICIALS`` record: its ``WRITE_CANDLES`` keys and
        arguments (without gaps) joined by \\x1f. At 00:00 UTC the whole market's 9,600
        final candles come at once: the series' own fields are joined once per series,
        a single row is packed in place, and the record is one format."""
        head = self._official_heads.get(w.series)
        if head is None:
            if len(self._official_heads) > LIVE_NAMES_KEPT:  # symbols come and go: bounded
                self._official_heads.clear()
            series = w.series
            keys = self._write_keys(series)
            names = (self.keys.klines_updated_channel, series.symbol, series.interval.name)
            head = self._official_heads[series] = (
                "\x1f".join(keys).encode(),
                "\x1f".join(names).encode(),
            )
        rows = w.rows
        if type(rows) is list and len(rows) == 1:
            open_ms, member = rows[0]
            count, opens, members = 1, b"%d" % open_ms, member + b"\n"
        else:
            packed = pack_rows(rows)
            count, opens, members = packed.count, packed.opens, packed.members
        return b"%b\x1f%d\x1f%b\x1f%d\x1f0\x1f%d\x1f%d\x1f%b\x1f%b" % (
            head[0],
            now_ms,
            head[1],
            count,
            w.replace_from_ms,
            w.replace_until_ms,
            opens,
            members,
        )

    def _write_keys(self, series: SeriesKey) -> list[str]:
        k = self.keys
        return [k.klines(series), k.meta(series), k.gaps(series), k.klines_scratch(series)]

    def _write_args(
        self,
        series: SeriesKey,
        rows: Rows,
        now_ms: int,
        gaps: Sequence[tuple[int, int]],
        replace_from_ms: int,
        replace_until_ms: int,
    ) -> list[Any]:
        packed = pack_rows(rows)
        args: list[Any] = [
            now_ms,
            self.keys.klines_updated_channel,
            series.symbol,
            series.interval.name,
            packed.count,
            len(gaps),
            replace_from_ms,
            replace_until_ms,
            packed.opens,
            packed.members,
        ]
        for first, nxt in gaps:
            args.append(first)
            args.append(nxt)
        return args

    async def present_opens(self, ranges: Sequence[tuple[SeriesKey, int, int]]) -> list[list[int]]:
        """For each ``(series, after_ms, until_ms)``: the open times stored in
        ``(after_ms, until_ms]``, ascending, in one pipelined round trip."""
        if not ranges:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for series, after_ms, until_ms in ranges:
                pipe.zrange(
                    k.klines(series), f"({after_ms}", until_ms, byscore=True, withscores=True
                )
            found = await pipe.execute()
        return [[int(score) for _, score in opens] for opens in found]

    async def gaps_between(
        self, ranges: Sequence[tuple[SeriesKey, int, int]]
    ) -> list[list[tuple[int, int]]]:
        """For each ``(series, after_ms, until_ms)``: the recorded exchange gaps
        ``(first missing, next present)`` reaching into ``(after_ms, until_ms]``."""
        if not ranges:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for series, _, until_ms in ranges:
                # a gap member is "first:next"; its score is the first missing open time
                pipe.zrange(self.keys.gaps(series), "-inf", until_ms, byscore=True)
            found = await pipe.execute()
        out = []
        for (_, after_ms, _), members in zip(ranges, found, strict=True):
            gaps = []
            for member in members:
                first, _, nxt = member.decode().partition(":")
                if int(nxt) > after_ms:
                    gaps.append((int(first), int(nxt)))
            out.append(gaps)
        return out

    async def remove_members(self, series: SeriesKey, members: Sequence[bytes], now_ms: int) -> int:
        """Remove members that break an invariant (``verify --repair``); fixes meta."""
        k = self.keys
        res = await self._script(
            self._remove, [k.klines(series), k.meta(series)], [now_ms, *members]
        )
        return int(res[0])

    async def meta(self, series: SeriesKey) -> Meta:
        h = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.meta(series)))
        return Meta.from_hash(h)

    async def metas(self, series: Sequence[SeriesKey]) -> list[Meta]:
        """``meta`` of each series, in one pipelined round trip."""
        if not series:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in series:
                pipe.hgetall(self.keys.meta(s))
            found = await pipe.execute()
        return [Meta.from_hash(h) for h in found]

    async def set_error(self, series: SeriesKey, error: str | None) -> None:
        key = self.keys.meta(series)
        if error is None:
            await cast(Awaitable[int], self.redis.hdel(key, "last_error"))
        else:
            await cast(Awaitable[int], self.redis.hset(key, "last_error", error[:500]))

    async def read_chart(
        self,
        series: SeriesKey,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
        cached_version: bytes = b"",
    ) -> ChartRead:
        """Official members in ``[start_ms, end_ms]`` (oldest first from ``start_ms``, or the
        newest ``limit`` up to ``end_ms``) with ``latest`` and the live value, one snapshot.
        With ``cached_version`` still current, the members are not sent again."""
        k = self.keys
        lo = "-inf" if start_ms is None else str(start_ms)
        hi = "+inf" if end_ms is None else str(end_ms)
        mode = "first" if start_ms is not None else "last"
        members, latest, live, version, closed = await self._script(
            self._read,
            [k.klines(series), k.meta(series), k.live_candle(series), k.live_closed(series)],
            [lo, hi, limit, mode, cached_version],
        )
        return ChartRead(
            None if members is None else list(members),
            int(float(latest)) if latest else None,
            live or None,
            version,
            list(closed),
        )

    async def members(
        self, series: SeriesKey, start: int = 0, stop: int = -1
    ) -> list[tuple[bytes, float]]:
        """Members with scores by rank (for verification and repair)."""
        res = await self.redis.zrange(self.keys.klines(series), start, stop, withscores=True)
        return cast(list[tuple[bytes, float]], res)

    async def count(self, series: SeriesKey) -> int:
        return int(await self.redis.zcard(self.keys.klines(series)))

    async def count_between(self, series: SeriesKey, after_ms: int, until_ms: int) -> int:
        """The candles stored with open times in ``(after_ms, until_ms]``."""
        return int(await self.redis.zcount(self.keys.klines(series), f"({after_ms}", until_ms))

    async def gaps(self, series: SeriesKey) -> list[tuple[int, int]]:
        out = []
        for member in cast(list[bytes], await self.redis.zrange(self.keys.gaps(series), 0, -1)):
            first, _, nxt = member.decode().partition(":")
            out.append((int(first), int(nxt)))
        return out

    async def stored_series(self) -> list[SeriesKey]:
        """Every series that has a ``klines_z`` key, sorted."""
        k = self.keys
        found: set[SeriesKey] = set()
        pattern = f"{k.prefix}klines_z:*"
        async for raw in self.redis.scan_iter(match=pattern, count=1000):
            name = raw.decode()[len(k.prefix) + len("klines_z:") :].strip("{}")
            symbol, _, interval = name.partition(":")
            try:
                found.add(SeriesKey(symbol, parse_interval(interval)))
            except ValueError:
                continue
        return sorted(found, key=str)

    # -- live data ----------------------------------------------------------------------

    async def write_live(
        self,
        candles: Iterable[LiveWrite],
        prices: Iterable[tuple[str, bytes]] = (),
        publish: bytes | None = None,
        closed: Iterable[bytes] = (),
        closed_candles: Iterable[ClosedLive] = (),
    ) -> None:
        """One pipelined round trip: live candles, live prices, closed live candles kept
        until confirmed (many series per script call), the batch message for the web app
        and the ``candle_closed`` message(s) for the fetcher (``store.closings``)."""
        if self._cluster:
            await self._write_live_on_cluster(candles, prices, publish, closed, closed_candles)
            return
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        self._write_closed_many(pipe, closed_candles)
        self._set_live(pipe, candles, prices)
        if publish is not None:
            pipe.publish(k.live_channel, publish)
        for message in closed:
            pipe.publish(k.closed_channel, message)
        try:
            await pipe.execute()
        finally:
            # a failed SCRIPT EXISTS comes before execute's own clean-up: give the
            # connection back now, not at garbage collection
            await pipe.reset()  # type: ignore[no-untyped-call]

    def _closed_writes(
        self, closed_candles: Iterable[ClosedLive]
    ) -> list[tuple[list[str], list[Any]]]:
        """``(keys, args)`` of the ``WRITE_LIVE_CLOSED`` call of each series closing (a
        cluster's path: each series' keys are in a slot of their own)."""
        k = self.keys
        calls = []
        for series, items in _by_series(closed_candles).items():
            args: list[Any] = [live_candle_ttl_ms(series.interval), LIVE_CLOSED_MAX]
            for c in items:
                args += [c.open_ms, c.value]
            calls.append(([k.live_closed(series), k.meta(series)], args))
        return calls

    def _write_closed_many(self, pipe: Any, closed_candles: Iterable[ClosedLive]) -> None:
        """Queue on ``pipe`` (a single Redis's) the closed live candles' writes: a
        ``WRITE_LIVE_CLOSED_MANY`` call per ``LIVE_CLOSED_PER_CALL`` series, each stored
        as ``WRITE_LIVE_CLOSED`` stores it (at 00:00 UTC the whole market closes at once:
        9,600 series, a call each was ~40% of the stream process for 2 s)."""
        by_series = list(_by_series(closed_candles).items())
        k = self.keys
        for at in range(0, len(by_series), LIVE_CLOSED_PER_CALL):
            keys: list[str] = []
            values: list[bytes] = []
            layout: list[str] = []
            for series, items in by_series[at : at + LIVE_CLOSED_PER_CALL]:
                keys += [k.live_closed(series), k.meta(series)]
                layout += [str(live_candle_ttl_ms(series.interval)), str(len(items))]
                layout += [str(c.open_ms) for c in items]
                values += [c.value for c in items]
            key_blob, value_blob = "\n".join(keys), b"\n".join(values)
            if key_blob.count("\n") != len(keys) - 1 or value_blob.count(b"\n") != len(values) - 1:
                # a value with a newline (never compact JSON): a call per series
                for keys_of, args in self._closed_writes(
                    c for _, items in by_series[at : at + LIVE_CLOSED_PER_CALL] for c in items
                ):
                    pipe.eval(scripts.WRITE_LIVE_CLOSED, len(keys_of), *keys_of, *args)
                continue
            pipe.eval(
                scripts.WRITE_LIVE_CLOSED_MANY,
                0,
                key_blob,
                value_blob,
                " ".join(layout),
                LIVE_CLOSED_MAX,
            )

    def _set_live(
        self,
        pipe: Any,
        candles: Iterable[LiveWrite],
        prices: Iterable[tuple[str, bytes]],
    ) -> None:
        """The live keys in ``SET_LIVE`` calls of at most ``SET_LIVE_PER_CALL`` keys,
        grouped by TTL, keys and values each as one newline-separated blob."""
        k = self.keys
        names = self._live_names
        groups: dict[Any, tuple[list[str], list[bytes]]] = {}
        for w in candles:
            group = groups.get(w.series.interval)
            if group is None:
                group = groups[w.series.interval] = ([], [])
            key = names.get(w.series)
            if key is None:
                if len(names) > LIVE_NAMES_KEPT:  # symbols come and go: bounded
                    names.clear()
                key = names[w.series] = k.live_candle(w.series)
            group[0].append(key)
            group[1].append(w.value)
        keys: list[str] = []
        values: list[bytes] = []
        tail: list[int] = []
        for interval, (group_keys, group_values) in groups.items():
            keys += group_keys
            values += group_values
            tail += [live_candle_ttl_ms(interval), len(group_keys)]
        n = len(keys)
        for symbol, value in prices:
            keys.append(k.live_price(symbol))
            values.append(value)
        if len(keys) > n:
            tail += [LIVE_PRICE_TTL_MS, len(keys) - n]
        if not keys:
            return
        # a call per SET_LIVE_PER_CALL keys: one call holds Redis (every other client)
        # that long
        per_call = SET_LIVE_PER_CALL
        at = 0
        g = 0
        left = tail[1]  # keys of group g not yet in a call
        while at < len(keys):
            end = min(at + per_call, len(keys))
            part_tail: list[int] = []
            taken = at
            while taken < end:
                count = min(left, end - taken)
                part_tail += [tail[g], count]
                taken += count
                left -= count
                if left == 0 and g + 2 < len(tail):
                    g += 2
                    left = tail[g + 1]
            self._set_live_call(pipe, keys[at:end], values[at:end], part_tail)
            at = end

    @staticmethod
    def _set_live_call(pipe: Any, keys: list[str], values: list[bytes], tail: list[int]) -> None:
        key_blob, value_blob = "\n".join(keys), b"\n".join(values)
        splittable = (
            key_blob.count("\n") == len(keys) - 1 and value_blob.count(b"\n") == len(values) - 1
        )
        if not splittable:  # a value with a newline (never compact JSON): one SET each
            _set_each(pipe, keys, values, tail)
            return
        pipe.eval(scripts.SET_LIVE, 0, key_blob, value_blob, *tail)

    async def live_candle(self, series: SeriesKey) -> bytes | None:
        return cast(bytes | None, await self.redis.get(self.keys.live_candle(series)))

    async def live_price(self, symbol: str) -> bytes | None:
        return cast(bytes | None, await self.redis.get(self.keys.live_price(symbol)))

    async def live_prices(self, symbols: Sequence[str]) -> list[bytes | None]:
        if not symbols:
            return []
        if self._cluster:  # one MGET per slot
            found = await self.redis.mget_nonatomic(  # type: ignore[attr-defined]
                [self.keys.live_price(s) for s in symbols]
            )
            return cast(list[bytes | None], found)
        values = await self.redis.mget([self.keys.live_price(s) for s in symbols])
        return cast(list[bytes | None], values)

    async def members_since(self, series: Sequence[SeriesKey], since_ms: int) -> list[list[bytes]]:
        """Official rows opening at or after ``since_ms`` of each series: one pipelined
        round trip for all (the tickers of the whole market)."""
        if not series:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for s in series:
            pipe.zrangebyscore(self.keys.klines(s), since_ms, "+inf")
        return cast(list[list[bytes]], await pipe.execute())

    async def set_live_candle(self, series: SeriesKey, value: bytes) -> None:
        await self.redis.set(
            self.keys.live_candle(series), value, px=live_candle_ttl_ms(series.interval)
        )

    # -- pub/sub ------------------------------------------------------------------------

    async def listen(
        self, *channels: str, subscribed: Callable[[], None] | None = None
    ) -> AsyncGenerator[tuple[str, bytes], None]:
        """``(channel, data)`` of every message published on ``channels``, until the
        caller stops iterating (or is cancelled). ``subscribed`` is called once Redis has
        confirmed the subscription: messages published after that are received.

        A channel may stay silent far longer than the client's socket timeout (which
        bounds every command's reply): the subscription polls for a message with a
        timeout of its own, so silence is not an error and the subscription is kept.
        A lost connection raises (the caller's supervisor starts it again)."""
        on_node = None
        if self._cluster:  # a plain connection to any node: PUBLISH reaches them all
            on_node, pubsub = await cluster.subscribe(self.redis, channels)  # type: ignore[arg-type]
        else:
            pubsub = self.redis.pubsub()
        try:
            if on_node is None:
                await pubsub.subscribe(*channels)
            confirmations = 0
            watch = cluster.NodeWatch()
            while True:
                m = await pubsub.get_message(timeout=LISTEN_POLL_S)
                if on_node is not None:  # a paused node holds no socket error: ask it
                    await watch.polled(pubsub, m is not None)
                if m is None:
                    continue  # silence (or the health check's PONG)
                kind = m.get("type")
                if kind == "subscribe":  # Redis's reply: from now on nothing is missed
                    confirmations += 1
                    if confirmations == len(channels) and subscribed is not None:
                        subscribed()
                    continue
                if kind != "message":
                    continue
                channel = m["channel"]
                yield channel.decode() if isinstance(channel, bytes) else channel, m["data"]
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            if on_node is not None:
                with contextlib.suppress(Exception):
                    await on_node.aclose()

    # -- health -------------------------------------------------------------------------

    async def ping_ms(self) -> float:
        """Redis's PING round trip in ms, measured apart from this process's event loop
        and connection pool (``RedisProbe``), so a busy process does not make a healthy
        Redis look down. Raises (ConnectionError, TimeoutError, ResponseError) only
        when Redis does not answer. Checks asked for while one runs share its answer."""
        if self._probe is None:
            self._probe = RedisProbe.for_client(self.redis) or False
        if self._probe is False:  # a cluster: PING every master through the client
            started_s = time.perf_counter()
            await cast(Awaitable[bool], self.redis.ping(target_nodes="primaries"))
            return (time.perf_counter() - started_s) * 1000
        last = self._last_ping
        if last is not None and time.monotonic() - last[0] < PING_REUSE_S:
            return last[1].result()  # /healthz asked again at once: no new connection
        if self._pinging is None:
            self._pinging = asyncio.ensure_future(asyncio.to_thread(self._probe.ping_ms))
            self._pinging.add_done_callback(self._pinged)
        return await asyncio.shield(self._pinging)

    def _pinged(self, done: asyncio.Future[float]) -> None:
        self._pinging = None
        if not done.cancelled() and done.exception() is None:  # retrieved either way
            self._last_ping = (time.monotonic(), done)  # a failure is asked again at once

    async def beat(self, role: str, state: dict[str, Any], ttl_ms: int) -> None:
        await self.redis.set(self.keys.health(role), _json.encode(state), px=ttl_ms)

    async def heartbeat(self, role: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.health(role))
        if raw is None:
            return None
        value: dict[str, Any] = msgspec.json.decode(raw)
        return value

    # -- the universe (symbols, their status, whether followed) ---------------------------

    async def write_universe(self, entries: Iterable[SymbolEntry]) -> None:
        """Store (replace) the entries given; entries not given are left as they are."""
        mapping = {e.symbol: _json.encode(e.as_dict()) for e in entries}
        if mapping:
            await self.redis.hset(self.keys.universe, mapping=mapping)  # type: ignore[misc]

    async def universe(self) -> dict[str, SymbolEntry]:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.universe))
        out: dict[str, SymbolEntry] = {}
        for value in raw.values():
            with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError, AttributeError):
                entry = SymbolEntry.from_dict(msgspec.json.decode(value))
                out[entry.symbol] = entry
        return out

    # -- the exchange's exchangeInfo (the proxy's copy) -----------------------------------

    async def write_exchange_info(self, body: bytes, fetched_ms: int) -> None:
        await self.redis.hset(  # type: ignore[misc]
            self.keys.exchange_info, mapping={"body": body, "fetched_ms": fetched_ms}
        )

    async def exchange_info_fetched_ms(self) -> int | None:
        raw = await cast(
            Awaitable[bytes | None], self.redis.hget(self.keys.exchange_info, "fetched_ms")
        )
        return int(raw) if raw is not None and raw.isdigit() else None

    async def exchange_info(self) -> tuple[bytes, int] | None:
        """The stored exchangeInfo body and when it was fetched, if stored."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.exchange_info))
        body, fetched = raw.get(b"body"), raw.get(b"fetched_ms")
        if body is None or fetched is None or not fetched.isdigit():
            return None
        return body, int(fetched)

    # -- Redis Cluster (store/cluster.py) -------------------------------------------------

    @property
    def _scripts(self) -> list[Any]:
        return [self._write, self._read, self._remove, self._write_closed]

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """``script`` on ``keys`` (redis-py's Script, or on a cluster ours: see
        ``cluster.load_scripts``)."""
        if self._cluster:
            return await cluster.evalsha(self.redis, script, keys, args, self._scripts)  # type: ignore[arg-type]
        return await script(keys=keys, args=args)

    async def _pipelined_on_cluster(
        self, ops: Sequence[cluster.Op], replicated: Sequence[str] = ()
    ) -> list[Any]:
        return await cluster.pipelined(
            self.redis,  # type: ignore[arg-type]
            ops,
            self._scripts,
            replicated,
            self.replication,
        )

    async def _write_live_on_cluster(
        self,
        candles: Iterable[LiveWrite],
        prices: Iterable[tuple[str, bytes]],
        publish: bytes | None,
        closed: Iterable[bytes],
        closed_candles: Iterable[ClosedLive],
    ) -> None:
        """``write_live`` on a cluster: the same commands, each sent to its slot's master."""
        k = self.keys
        ops: list[cluster.Op] = [
            _script_op(self._write_closed, keys, args)
            for keys, args in self._closed_writes(closed_candles)
        ]
        for w in candles:
            key, ttl_ms = k.live_candle(w.series), live_candle_ttl_ms(w.series.interval)
            ops.append(functools.partial(_set, key=key, value=w.value, px=ttl_ms))
        for symbol, value in prices:
            ops.append(
                functools.partial(_set, key=k.live_price(symbol), value=value, px=LIVE_PRICE_TTL_MS)
            )
        if publish is not None:
            ops.append(functools.partial(_publish, channel=k.live_channel, message=publish))
        for message in closed:
            ops.append(functools.partial(_publish, channel=k.closed_channel, message=message))
        if ops:
            await self._pipelined_on_cluster(ops)


def _by_series(closed_candles: Iterable[ClosedLive]) -> dict[SeriesKey, list[ClosedLive]]:
    by_series: dict[SeriesKey, list[ClosedLive]] = {}
    for c in closed_candles:
        by_series.setdefault(c.series, []).append(c)
    return by_series


def _set_each(pipe: Any, keys: list[str], values: list[bytes], tail: list[int]) -> None:
    """``SET_LIVE``'s writes as one SET each (``tail``: its (ttl_ms, count) pairs)."""
    i = 0
    for g in range(0, len(tail), 2):
        ttl_ms, count = tail[g], tail[g + 1]
        for j in range(i, i + count):
            pipe.set(keys[j], values[j], px=ttl_ms)
        i += count


def _set(pipe: Any, key: str, value: bytes, px: int) -> None:
    pipe.set(key, value, px=px)


def _publish(pipe: Any, channel: str, message: bytes) -> None:
    pipe.execute_command("PUBLISH", channel, message)  # by name: the method is refused


def _script_op(script: Any, keys: list[str], args: list[Any]) -> cluster.Op:
    # by SHA (redis-py's cluster pipeline refuses Script calls and EVALSHA by name)
    return lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
