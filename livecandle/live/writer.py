"""LiveWriter: forming candles and prices into Redis, coalesced and pipelined.

Whatever the trade rate, each ``live_candle`` / ``live_price`` key is written at most
once per write period (default 100 ms). For the web app one batch message is published
per publish period (default 10 ms): prices every time (a trade reaches a browser within
tens of milliseconds; the page moves its forming candle with them), candles with their
keys and at once when one closes. A key write goes a share of its symbols a flush, so
that no flush carries a whole market's values. The candles that closed are stored
(``live_closed``, many series per script call) and announced to the fetcher (one
``candle_closed`` message naming them all: ``store.closings``) in the same pipelined
round trip.
While ``run`` goes (without a fence, writes succeeding) the prices have a batch message
of their own each publish period, published one at a time by a loop beside the
flushes: a flush's round trip may be long (at 00:00 UTC the whole market's closes and
candles) and no price waits for it; their keys still go with the next key write.
The exchange's final candles (the stream's closed klines) are official: each flush stores
those that arrived since the last in one pipelined round trip, through the same store
script as REST rows, before anything else. A final candle replaces a different stored
row (a REST row read while the exchange's REST still lagged) only within ``rest_lag_ms``
of its close; a later one only fills a missing open time (reconciliation has the last word).
The writer reads the builders' state at flush time, so a slow Redis only delays the
next flush; it never holds back the socket reader or the aggregation.
While writes fail (Redis down, or full and refusing writes) the writer retries with
backoff, says so once (and once more when writes succeed again), and publishes nothing
until the keys are stored: then one flush writes and publishes the newest state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

import msgspec

from livecandle.backoff import Backoff
from livecandle.domain.aggregator import ClosedCandle, LiveCandleBuilder
from livecandle.domain.intervals import Interval
from livecandle.domain.model import SeriesKey, format_units
from livecandle.live.values import LiveValues
from livecandle.store import ClosedLive, LiveWrite, Store
from livecandle.store.closings import encode_closings
from livecandle.store.fencing import write_live_fenced
from livecandle.store.leases import Resume
from livecandle.store.store import ANY_OPEN_MS, OfficialWrite

log = logging.getLogger(__name__)

_enc = msgspec.json.Encoder()

# what is kept for the retry while Redis is away: closed candles and their announcements
KEPT_WHILE_FAILING = 10_000
# final candles stored in one flush: at 00:00 UTC every series closes (the whole market's
# 9,600 in 48 script calls, ~0.3 s of Redis) and all go in the first flush after they
# came; in slices of 2,000 they waited behind the flushes between (each as long, with
# that close's 9,600 closed live candles): lag at 00:00 p99 5.3 -> 2.0 s, stream only
FINALS_PER_FLUSH = 10_000
# While ``run`` goes they are stored by a loop of their own beside the live flushes, at
# most FINALS_PER_ROUND_TRIP a round trip, so the live flushes run between: packing the
# whole market's 9,600 into one round trip, and reading their results, held this
# process's event loop (every live update) 0.1-0.2 s at a time at 00:00 (py-spy); 1,000
# a round trip still held it ~20-40 ms (packing, then reading the replies)
FINALS_PER_ROUND_TRIP = 400
# closed candles taken into one flush (a symbol's closes are never split): a flush
# taking 1,200 spent 60-120 ms encoding them and their symbols' values at 00:00 UTC (the
# whole market's 9,600 in one flush held every live update for most of a second, with a
# batch message of ~7 MB), and every price published waited that long: the live p99 of
# the 10 s after 00:00 was ~100-120 ms at the stream's end alone. 300 (50 symbols of 6
# intervals) a flush: the whole market's closes go in ~32 flushes, ~1-2 s; the rest wait
# for the next flushes, which still publish every price
CLOSES_PER_FLUSH = 300
# A key write is spread over the flushes of half a write period, at least this many
# symbols a flush: at whole-market scale ~300 symbols (~1,900 values) changed in each
# write period, and writing them in one flush took ~35 ms to encode and ~60 ms of round
# trip (p99 150-450 ms), while no price went out: that was most of the live tail
KEYS_PER_FLUSH = 64
# Binance's REST may serve a just-closed candle stale this long after its close
REST_LAG_MS = 30_000


class Fence(Protocol):
    """The symbols this worker owns under a lease (``runtime.leases``): the epoch each
    write carries, and who is told when the store refuses one."""

    worker: str

    def epoch_of(self, symbol: str) -> int | None: ...

    async def refused(self, symbols: set[str]) -> None: ...


class FinalCandle(NamedTuple):
    """The exchange's final candle of one interval, in its stored form (``row``). A
    tuple: the feed makes the whole market's 9,600 at 00:00 UTC (a frozen dataclass
    costs several times as much to build)."""

    interval: Interval
    open_ms: int
    close_ms: int
    row: bytes


class SymbolLive:
    """What the writer needs from one symbol's live state. The feed owns it (each of its
    symbol states holds one) and marks what changed (``traded``, ``add_closed``,
    ``add_final``, or setting ``dirty``/``price_dirty``); each mark also names the symbol in
    ``changed``, the set shared by every symbol of a ``LiveStates``, so a flush looks at the
    symbols that changed, not at the whole market."""

    __slots__ = (
        "_dirty",
        "_price_dirty",
        "agg_id",
        "builder",
        "changed",
        "closed",
        "finaled",
        "finals",
        "last_trade_ms",
        "priced",
        "symbol",
        "trade_id",
        "unwritten",
        "unwritten_price",
        "unwritten_resume",
        "values",
    )

    def __init__(
        self, symbol: str, builder: LiveCandleBuilder, changed: set[str] | None = None
    ) -> None:
        self.symbol = symbol
        self.builder = builder
        self.changed: set[str] = set() if changed is None else changed
        self.priced: set[str] = set()  # the symbols whose price changed (shared likewise)
        self.finaled: set[str] = set()  # ... that have final candles to store (likewise)
        self._dirty = False  # candles changed since the last publish
        self._price_dirty = False
        self.last_trade_ms = 0
        self.closed: list[ClosedCandle] = []  # append through add_closed
        self.unwritten: list[LiveWrite] = []  # newest values, keys not set
        self.unwritten_price: bytes | None = None
        self.finals: list[FinalCandle] = []  # official, not yet stored; add_final
        self.values = LiveValues(symbol, builder)  # the last live_candle values
        # the last aggregate trade id (and its last individual trade id) in the builder,
        # set by the feed; written with the candles as the symbol's resume point
        self.agg_id = -1
        self.trade_id = -1
        self.unwritten_resume: Resume | None = None

    @property
    def dirty(self) -> bool:
        return self._dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        if value:
            self.changed.add(self.symbol)

    @property
    def price_dirty(self) -> bool:
        return self._price_dirty

    @price_dirty.setter
    def price_dirty(self, value: bool) -> None:
        self._price_dirty = value
        if value:
            self.changed.add(self.symbol)
            self.priced.add(self.symbol)

    def traded(self, time_ms: int) -> None:
        """A trade at ``time_ms`` moved the candles and the price."""
        self.last_trade_ms = time_ms
        self._dirty = self._price_dirty = True
        self.changed.add(self.symbol)
        self.priced.add(self.symbol)

    def add_closed(self, closed: Iterable[ClosedCandle]) -> None:
        self.closed.extend(closed)
        self._dirty = True
        self.changed.add(self.symbol)

    def add_final(self, final: FinalCandle) -> None:
        self.finals.append(final)
        self.changed.add(self.symbol)
        self.finaled.add(self.symbol)


class LiveStates(dict[str, SymbolLive]):
    """Symbols' live states by symbol, and ``changed``: the symbols marked since the
    writer last looked (each ``SymbolLive`` of it shares this set)."""

    def __init__(self, states: Mapping[str, SymbolLive] | None = None) -> None:
        super().__init__()
        self.changed: set[str] = set()
        self.priced: set[str] = set()  # of them, those whose price changed
        self.finaled: set[str] = set()  # ... and those with final candles to store
        for symbol, st in (states or {}).items():
            self.adopt(st)
            self[symbol] = st

    def adopt(self, st: SymbolLive) -> SymbolLive:
        """Have ``st`` mark its changes here; it starts as changed."""
        st.changed, st.priced, st.finaled = self.changed, self.priced, self.finaled
        self.changed.add(st.symbol)
        if st.price_dirty:
            self.priced.add(st.symbol)
        if st.finals:
            self.finaled.add(st.symbol)
        return st


class LiveWriter:
    """Publishes changes every ``publish_period_ms`` (one pub/sub message for all of
    them) and sets the Redis keys at most every ``write_period_ms``."""

    def __init__(
        self,
        store: Store,
        symbols: Mapping[str, SymbolLive],
        now_ms: Callable[[], int],
        write_period_ms: int = 100,
        publish_period_ms: int = 10,
        retry_base_s: float = 0.25,
        retry_cap_s: float = 2.0,
        rest_lag_ms: int = REST_LAG_MS,
        fence: Fence | None = None,
        closes_per_flush: int = CLOSES_PER_FLUSH,
        finals_per_round_trip: int = FINALS_PER_ROUND_TRIP,
        keys_per_flush: int = KEYS_PER_FLUSH,
    ) -> None:
        self.store = store
        self.fence = fence  # leases: only owned symbols are written, at their epoch
        # the feed's LiveStates (the same dict as symbols come and go); a plain mapping
        # is adopted once (its states then mark their changes here)
        self.symbols = symbols if isinstance(symbols, LiveStates) else LiveStates(symbols)
        self._held: set[str] = set()  # changed candles waiting for the next key write
        # the symbols of the key write under way, in order: a share of them each flush
        self._round: dict[str, None] = {}
        self._share = 0  # symbols of the round written per flush
        self.keys_per_flush = keys_per_flush
        self._unwritten: dict[str, SymbolLive] = {}  # values encoded, keys not set yet
        self._running_prices = False  # run's price loop goes
        self._written_ok = False  # a flush has succeeded since the last failure
        self.closes_per_flush = closes_per_flush
        self.finals_per_round_trip = finals_per_round_trip
        # symbols whose closes (and so their candles) wait for the next flush, in order
        self._deferred: dict[str, None] = {}
        self.now_ms = now_ms
        self.write_period_ms = write_period_ms
        self.publish_period_ms = publish_period_ms
        self.flushes = 0
        self.keys_written = 0
        self.prices_republished = 0  # prices sent again after older candles (flush)
        self.published = 0
        self.last_flush_s = 0.0
        self.errors = 0
        self._last_write = 0.0
        self._announced: set[tuple[str, str, int]] = set()
        self._closed: list[ClosedLive] = []  # kept until a write succeeds
        # (symbol, interval, open_ms) of the candles to announce (candle_closed), likewise
        self._closings: list[tuple[str, str, int]] = []
        self.rest_lag_ms = rest_lag_ms
        self._finals: list[tuple[SeriesKey, FinalCandle]] = []  # kept until stored
        self._finals_queued = asyncio.Event()  # for run's finals loop
        self.finals_stored = 0  # official candles the stream added
        self.finals_replaced = 0  # ... that replaced a different (stale) stored row
        self.finals_kept = 0  # late finals that differed from the stored row (not applied)
        self.refused = 0  # symbols' writes the store refused (a newer lease epoch)
        self._backoff = Backoff(retry_base_s, retry_cap_s)
        self.failing_since_s: float | None = None  # monotonic start of the current outage
        self.last_error: str | None = None
        self._outage_errors = 0

    @property
    def storage_error(self) -> str | None:
        """Why live writes fail right now (None while they succeed), for /healthz."""
        return self.last_error if self.failing_since_s is not None else None

    async def run(self) -> None:
        """The live flushes, and beside them the exchange's final candles' writes and
        (without a fence) the prices' publishes."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._run_finals(), name="live-writer-finals")
            if self.fence is None:
                tasks.create_task(self._run_prices(), name="live-writer-prices")
            await self._run_flushes()

    def _prices_apart(self) -> bool:
        """Prices go out by ``run``'s price loop, not with the flushes: while writes
        succeed (once one has; while they fail, keys go first and one flush publishes
        everything after)."""
        return self._running_prices and self._written_ok and self.failing_since_s is None

    async def _run_prices(self) -> None:
        """Every publish period the prices that changed, in a message of their own: a
        flush's round trip can be long (at 00:00 UTC the whole market's closes and
        candles, megabytes a flush, sent between the turns of a busy event loop:
        ~0.3-0.5 s each), and no price waits for it. In order: one publish at a time."""
        period = self.publish_period_ms / 1000
        self._running_prices = True
        try:
            while True:
                started = time.monotonic()
                if self._prices_apart():
                    await self._publish_prices()
                await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))
        finally:
            self._running_prices = False

    async def _publish_prices(self) -> None:
        """The changed prices as one batch message (their keys go with the next key
        write, as a flush's prices do)."""
        priced = self.symbols.priced
        if not priced:
            return
        names = list(priced)
        priced.clear()
        symbols = self.symbols
        unwritten = self._unwritten
        batch: list[msgspec.Raw] = []
        for name in names:
            st = symbols.get(name)
            if st is None or not st._price_dirty:
                continue
            price = self._price_of(st)
            if price is not None:
                batch.append(msgspec.Raw(price))
                unwritten[name] = st
        if not batch:
            return
        message = _enc.encode({"time": self.now_ms(), "prices": batch, "candles": []})
        try:
            await self.store.write_live((), (), message)
        except Exception as e:
            self._failed(e)  # the prices are published again once writes succeed
            return
        self.published += 1

    def _price_of(self, st: SymbolLive) -> bytes | None:
        """The symbol's ``live_price`` value, kept for the next key write; its price is
        no longer dirty."""
        last = st.builder.last_price
        if last is None:
            return None
        price = _enc.encode(
            {"symbol": st.symbol, "price": format_units(last), "time": st.last_trade_ms}
        )
        st.unwritten_price = price
        st._price_dirty = False
        return price

    async def _run_flushes(self) -> None:
        period = self.publish_period_ms / 1000
        while True:
            started = time.monotonic()
            write = (started - self._last_write) * 1000 >= self.write_period_ms
            await self.flush(write_keys=write, finals=False, prices=not self._prices_apart())
            if self.failing_since_s is not None:
                await asyncio.sleep(self._backoff.next_s())
                continue
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def _run_finals(self) -> None:
        """Store the final candles the feed marks, ``finals_per_round_trip`` a round
        trip, one round trip after another, taken straight from the symbols (a flush's
        round trip at 00:00 UTC can be long: they do not wait for the next one); a
        failure is the writer's (``_failed``: kept, retried with its backoff)."""
        period = self.publish_period_ms / 1000
        while True:
            self._collect_finals()
            if not self._finals:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self._finals_queued.wait()
                self._finals_queued.clear()
                continue
            try:
                await self._store_finals(self.now_ms(), self.finals_per_round_trip)
            except Exception as e:
                self._failed(e)
                await asyncio.sleep(self._backoff.next_s())

    def _collect_finals(self) -> None:
        """The symbols' final candles (``SymbolLive.add_final``) into the queue to store."""
        finaled = self.symbols.finaled
        if not finaled:
            return
        names = list(finaled)
        finaled.clear()
        for name in names:
            st = self.symbols.get(name)
            if st is not None and st.finals:
                series_of = st.values.series_of
                self._finals.extend((series_of(f.interval), f) for f in st.finals)
                st.finals.clear()

    async def flush(self, write_keys: bool = True, finals: bool = True, prices: bool = True) -> int:
        """Publish what changed since the last flush; with ``write_keys`` also start a
        key write of everything changed since the last one. A key write goes a share of
        its symbols a flush (``keys_per_flush`` or more, so that it ends within half a
        write period), each symbol's candles published with its keys; a symbol closing a
        candle is written at once. Returns keys written.
        While writes fail, every flush writes all the keys first and publishes after.
        ``finals``: store the exchange's final candles waiting, first (else they are
        left to ``run``'s loop of their own); ``prices``: publish the changed prices
        too (else they are left to ``run``'s price loop)."""
        failing = self.failing_since_s is not None
        write_keys = write_keys or failing
        now = self.now_ms()
        symbols = self.symbols
        changed = symbols.changed
        round_ = self._round
        unwritten = self._unwritten
        if (write_keys and not round_) or failing:
            # a symbol no longer followed (or followed again: a new state) is not written
            for name in [n for n, st in unwritten.items() if symbols.get(n) is not st]:
                del unwritten[name]
            # a new key write: what changed since the last, oldest first
            for name in (*self._held, *changed):
                st = symbols.get(name)
                if st is not None and (st._dirty or st._price_dirty or name in unwritten):
                    round_[name] = None
            self._held = set()
            if round_:
                self._last_write = time.monotonic()
            self._share = max(
                self.keys_per_flush,
                -(-len(round_) * 2 * self.publish_period_ms // max(1, self.write_period_ms)),
            )
        due: dict[str, None] = {}
        if round_:
            share = len(round_) if failing else self._share
            for name in round_:
                due[name] = None
                if len(due) >= share:
                    break
            for name in due:
                del round_[name]
        deferred = self._deferred
        names = list(deferred)  # first: closes wait at most as long as those before them
        self._deferred = {}
        names += (n for n in due if n not in deferred)
        names += (n for n in changed if n not in deferred and n not in due)
        changed.clear()  # what changes while this flush awaits Redis goes in the next
        self._collect_finals()
        closes_left = self.closes_per_flush
        # the batch is built from the values already encoded for the keys
        batch_candles: list[msgspec.Raw] = []
        batch_prices: list[msgspec.Raw] = []
        writing: list[SymbolLive] = []  # the symbols whose keys this flush sets
        # with prices apart, each symbol whose candles this flush publishes, and its last
        # trade then: the price loop may publish a newer price before these candles land
        stamped: list[tuple[SymbolLive, int]] | None = None if prices else []
        for name in names:
            st = symbols.get(name)
            if st is None:  # no longer followed
                continue
            if prices and st._price_dirty:
                price = self._price_of(st)
                if price is not None:
                    batch_prices.append(msgspec.Raw(price))
                    unwritten[name] = st
            closing = bool(st.closed)
            if closing:
                if closes_left <= 0:
                    # its candles wait with its closes: a live candle never shows a
                    # period before the closed one is stored
                    self._deferred[name] = None
                    continue
                closes_left -= len(st.closed)
                self._take_closed(st)
            if not (closing or name in due):
                # candles go out with their keys, or at once on a close; live_price
                # (every publish period) carries the trades in between
                if (st._dirty or name in unwritten) and name not in round_:
                    self._held.add(name)
                continue
            if name in unwritten or st._dirty:
                writing.append(st)
                unwritten[name] = st
            if not st._dirty:
                continue
            st._dirty = False
            st.unwritten = st.values.encode(st.builder, now)
            if self.fence is not None:
                b = st.builder
                st.unwritten_resume = Resume(
                    st.agg_id,
                    st.trade_id,
                    candles={
                        i.name: (b.open_of(n), o.trades)
                        for n, i in enumerate(b.intervals)
                        if (o := b.forming_sums(n)) is not None
                    },
                )
            batch_candles.extend(msgspec.Raw(w.value) for w in st.unwritten)
            unwritten[name] = st
            if stamped is not None:
                stamped.append((st, st.agg_id))
        writes: list[LiveWrite] = []
        price_keys: list[tuple[str, bytes]] = []
        # while writes fail, all that is unwritten goes (the keys first: write_live)
        written = [(st, st.unwritten_price) for st in (unwritten.values() if failing else writing)]
        for st, price in written:
            writes.extend(st.unwritten)
            if price is not None:
                price_keys.append((st.symbol, price))
        closed = self._closed
        # one message for every candle that closed (at 00:00 UTC the whole market's)
        closed_msgs = [encode_closings(self._closings)] if self._closings else []
        store_finals = finals and bool(self._finals)
        if self._finals and not finals:
            self._finals_queued.set()
        if not (
            writes
            or price_keys
            or closed
            or closed_msgs
            or batch_candles
            or batch_prices
            or store_finals
        ):
            return 0
        message = None
        if batch_candles or batch_prices:
            message = _enc.encode({"time": now, "prices": batch_prices, "candles": batch_candles})
        started = time.monotonic()
        try:
            if store_finals:
                await self._store_finals(now, FINALS_PER_FLUSH)
            if self.fence is not None:
                states = [st for st, _ in written]
                await self._write_fenced(
                    self.fence, writes, price_keys, message, closed_msgs, states
                )
            elif failing:  # a full Redis refuses the keys but not a PUBLISH: keys first
                await self.store.write_live(writes, price_keys, None, (), closed)
                await self.store.write_live((), (), message, closed_msgs)
            else:
                await self.store.write_live(writes, price_keys, message, closed_msgs, closed)
        except Exception as e:
            self._failed(e)
            return 0
        self._closed, self._closings = [], []
        if stamped:
            self._republish_newer_prices(stamped)
        for st, price in written:
            st.unwritten = []
            # a price published meanwhile (run's price loop) waits for the next write
            if st.unwritten_price is price:
                st.unwritten_price = None
                if unwritten.get(st.symbol) is st:
                    del unwritten[st.symbol]
        self._written_ok = True
        self.last_flush_s = time.monotonic() - started
        self.flushes += 1
        self.published += message is not None
        self.keys_written += len(writes) + len(price_keys)
        if failing:
            self._recovered()
        return len(writes) + len(price_keys)

    def _republish_newer_prices(self, stamped: list[tuple[SymbolLive, int]]) -> None:
        """A symbol that traded while its candles were on their way may have had the
        newer price published first (the price loop does not wait for a flush, and the
        order two connections' messages reach Redis in is not ours): a subscriber would
        then hold candles whose close is older than a price it was shown. Its price goes
        out again in the price loop's next message, after these candles. (One not yet
        published will go out after them anyway.)"""
        for st, agg_id in stamped:
            if st.agg_id != agg_id and not st._price_dirty:
                st.price_dirty = True
                self.prices_republished += 1

    async def _write_fenced(
        self,
        fence: Fence,
        writes: list[LiveWrite],
        prices: list[tuple[str, bytes]],
        message: bytes | None,
        closed_msgs: list[bytes],
        written: list[SymbolLive],
    ) -> None:
        """The write of a leased worker: only symbols it owns, each at its epoch, with its
        resume point; symbols the store refuses are given up (``fence.refused``)."""
        names = {w.series.symbol for w in writes} | {s for s, _ in prices}
        names |= {c.series.symbol for c in self._closed}
        epochs = {s: e for s in names if (e := fence.epoch_of(s)) is not None}
        resume = {}
        for st in written:
            r, epoch = st.unwritten_resume, epochs.get(st.symbol)
            if r is not None and epoch is not None:
                resume[st.symbol] = Resume(r.agg_id, r.trade_id, epoch, fence.worker, r.candles)
        if len(epochs) < len(names):  # no longer owned: not written at all
            writes = [w for w in writes if w.series.symbol in epochs]
            prices = [p for p in prices if p[0] in epochs]
            self._closed = [c for c in self._closed if c.series.symbol in epochs]
        refused = await write_live_fenced(
            self.store, epochs, resume, writes, prices, message, closed_msgs, self._closed
        )
        if refused:
            self.refused += len(refused)
            await fence.refused(refused)

    def _take_closed(self, st: SymbolLive) -> None:
        """The symbol's closed candles into the next write, each announced once."""
        values = st.values
        for c in st.closed:
            self._closed.append(
                ClosedLive(
                    values.series_of(c.interval),
                    c.candle.open_ms,
                    values.closed(c.interval, c.candle, c.complete),
                )
            )
            key = (st.symbol, c.interval.name, c.candle.open_ms)
            if not c.correction and key not in self._announced:
                self._announced.add(key)
                self._closings.append(key)
        st.closed.clear()
        if len(self._announced) > 100_000:
            self._announced.clear()

    async def _store_finals(self, now_ms: int, most: int) -> None:
        """The exchange's final candles as official rows (``most`` of them), one round
        trip for all."""
        batch = self._finals[:most]
        writes = []
        fence = self.fence
        for series, f in batch:
            if fence is not None and fence.epoch_of(series.symbol) is None:
                continue  # no longer ours: the owner stores it
            if f.close_ms >= now_ms - self.rest_lag_ms:  # fresh: it may replace a REST row
                writes.append(OfficialWrite(series, [(f.open_ms, f.row)], f.open_ms, f.open_ms))
            else:  # late: reconciliation has re-read the candle by now
                writes.append(
                    OfficialWrite(series, [(f.open_ms, f.row)], ANY_OPEN_MS, -ANY_OPEN_MS)
                )
        results = await self.store.write_officials(writes, now_ms)
        del self._finals[: len(batch)]
        for w, r in zip(writes, results, strict=True):
            self.finals_stored += r.added
            self.finals_replaced += r.replaced
            self.finals_kept += r.kept
            if r.replaced:
                log.warning(
                    "%s %s: the exchange's final candle replaced a different stored row "
                    "(a REST row read while the exchange still lagged)",
                    w.series,
                    r.replaced_opens[0],
                )

    def _failed(self, e: Exception) -> None:
        """Keep what the retry needs (bounded) and have it carry the newest state; say
        it once per outage."""
        self._written_ok = False
        self.errors += 1
        self._outage_errors += 1
        self.last_error = f"{type(e).__name__}: {e}"[:300]
        del self._closed[:-KEPT_WHILE_FAILING]
        del self._closings[:-KEPT_WHILE_FAILING]
        del self._finals[:-KEPT_WHILE_FAILING]
        for st in self.symbols.values():
            st.dirty = True
            st.price_dirty = st.price_dirty or st.unwritten_price is not None
        if self.failing_since_s is None:
            self.failing_since_s = time.monotonic()
            log.error(
                "live writes to Redis fail (%s); retrying with backoff, publishing nothing "
                "until they succeed",
                self.last_error,
            )
        else:
            log.debug("live write failed again: %s", self.last_error)

    def _recovered(self) -> None:
        assert self.failing_since_s is not None
        log.warning(
            "live writes to Redis succeed again after %.1f s and %d failed attempts (%s); "
            "the newest state is written and published",
            time.monotonic() - self.failing_since_s,
            self._outage_errors,
            self.last_error,
        )
        self.failing_since_s = None
        self._outage_errors = 0
        self._backoff.reset()
