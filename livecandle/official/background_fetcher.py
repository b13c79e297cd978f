"""background_fetcher: official klines from Binance REST into ``klines_z``, for what the
streams did not deliver.

The stream stores each final kline as the official candle at once (``live.writer``). Per
series, this backfills on first start (the last N candles), then, a few seconds
(``stream_grace_ms``) after each close, looks in the store for candles still missing since
the newest point up to which none is (one pipelined read for every series due) and fetches
only those over REST (``Priority.CLOSED``; a longer catch-up as ``Priority.HISTORY``).
One scheduler (a heap of due times) serves every series; ``concurrency`` workers send the
requests. Only closed candles are stored: a row is closed when its close time has passed
on the server clock, and the last row of an answer that reaches "now" (Binance's forming
kline) is never stored. Open times missing between rows the exchange did return are
recorded as exchange gaps, so they are not fetched again. A REST row of a candle that
closed less than ``rest_lag_ms`` ago only fills a missing open time (Binance's REST may
still serve it stale); the ``Reconciler`` re-reads it once settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from livecandle.backoff import Backoff
from livecandle.domain.clock import ServerClock
from livecandle.domain.model import SeriesKey
from livecandle.exchange.binance.rest import (
    KLINES_LIMIT,
    BinanceBanned,
    BinanceError,
    BinanceRest,
    BinanceUnavailable,
)
from livecandle.exchange.binance.weights import Priority
from livecandle.official.due import DueHeap
from livecandle.official.reconciler import Reconciler
from livecandle.official.rows import (
    closed_rows,
    find_gaps,
    first_missing,
    opens_between,
    packed_rows,
)
from livecandle.store import Meta, Store, StoreError
from livecandle.store.closings import decode_closings

log = logging.getLogger(__name__)

# Retries of a failing series: 1-2 s, 2-4 s, 4-8 s ... up to 30-60 s.
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
# a missing candle this close to the newest closed one is a just-closed candle
# (Priority.CLOSED); further back it is a catch-up (Priority.HISTORY)
CLOSED_CANDLES = 3
# series looked up in the store in one round trip (the event loop runs between)
CHECK_BATCH = 2_000
# on start, the newest stored candles are checked this far back for holes
START_CHECK_CANDLES = 100
# A write of at least this many rows is a bulk write: one at a time per fetcher. Redis
# runs each script whole, so every live write and just-closed official write queued
# behind bulk history writes waits for all of them; one at a time, for one (a 1,000-row
# write is ~6 ms of Redis), and ~100 such writes a second still go through.
BULK_ROWS = 100


@dataclass
class SyncResult:
    series: SeriesKey
    fetched: int = 0
    stored: int = 0
    replaced: int = 0
    kept: int = 0  # rows of the REST lag window that differed from the stored row
    gaps: list[tuple[int, int]] = field(default_factory=list)
    latest: int | None = None
    requests: int = 0
    newest_open_ms: int | None = None  # of the newest closed row the exchange returned
    fresh_added: bool = False  # a row of the REST lag window filled a missing open time


@dataclass
class SeriesStatus:
    last_sync_ms: int | None = None
    last_error: str | None = None
    latest: int | None = None
    syncs: int = 0
    stored: int = 0
    filled_ms: int | None = None  # every candle up to this open time is stored (or a gap)
    retry_ms: int = 250
    backoff: Backoff = field(default_factory=lambda: Backoff(RETRY_BASE_S, RETRY_CAP_S))


@dataclass(frozen=True, slots=True)
class _Job:
    series: SeriesKey
    start_ms: int | None  # None: the first sync (from what is stored, or a backfill)
    prev_open_ms: int | None
    priority: Priority
    meta: Meta | None = None  # of a first sync: read with those of the other due series


class BackgroundFetcher:
    def __init__(
        self,
        store: Store,
        rest: BinanceRest,
        series: Sequence[SeriesKey],
        backfill_candles: int = 1000,
        concurrency: int = 4,
        settle_ms: int = 300,
        min_gap_ms: int = 1_000,
        retry_cap_ms: int = 10_000,
        clock: ServerClock | None = None,
        stream_grace_ms: int = 3_000,
        rest_lag_ms: int = 30_000,
        reconcile: bool = True,
        reconcile_share: float = 0.5,
    ) -> None:
        self.store = store
        self.rest = rest
        self.clock = clock or rest.clock
        self._followed: dict[SeriesKey, None] = {}  # in order of addition
        self.backfill_candles = backfill_candles
        self.concurrency = concurrency
        self.settle_ms = settle_ms
        self.min_gap_ms = min_gap_ms
        self.retry_cap_ms = retry_cap_ms
        self.stream_grace_ms = stream_grace_ms
        self.rest_lag_ms = rest_lag_ms
        self._sem = asyncio.Semaphore(concurrency)
        self._bulk = asyncio.Lock()  # one bulk write at a time (BULK_ROWS)
        self.status: dict[SeriesKey, SeriesStatus] = {}
        self.unknown_symbols: set[str] = set()
        self.syncs = 0
        self.checks = 0  # series looked up in the store after a close
        self.replaced = 0  # stored rows a settled REST row of a sync replaced
        self._synced = asyncio.Condition()
        self.listening = asyncio.Event()  # listen_closed is subscribed
        self.storage_error: str | None = None  # the last Redis failure, until a sync succeeds
        self._due: DueHeap[SeriesKey] = DueHeap()
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._busy: set[SeriesKey] = set()  # a job queued or running
        self._dropped: dict[SeriesKey, asyncio.Event] = {}
        self._runner: asyncio.Task[None] | None = None
        self._users = 0
        self.reconciler: Reconciler | None = None
        if reconcile:
            self.reconciler = Reconciler(
                store,
                rest,
                self.clock,
                rest_lag_ms,
                spare_share=reconcile_share,
                busy=lambda: bool(self._busy),
                ready=lambda series: self.status[series].filled_ms is not None,
            )
        for s in series:
            self.add_series(s)

    # -- one sync -------------------------------------------------------------------------

    async def sync(
        self,
        series: SeriesKey,
        start_ms: int | None = None,
        end_ms: int | None = None,
        progress: Callable[[SyncResult, int], None] | None = None,
        priority: Priority = Priority.HISTORY,
        prev_open_ms: int | None = None,
    ) -> SyncResult:
        """Fetch and store closed candles of ``series``.

        Without ``start_ms``: from ``klines_meta.latest`` forward, or the last
        ``backfill_candles`` on first start. With it: ``[start_ms, end_ms]`` (backfill),
        ``prev_open_ms`` the stored candle before it (for gap detection)."""
        interval = series.interval
        result = SyncResult(series)
        now_ms = self.clock.now_ms()
        if start_ms is None:
            meta = await self.store.meta(series)
            if meta.latest is None:
                start_ms = interval.shift(interval.open_of(now_ms), -self.backfill_candles)
            else:
                start_ms = meta.latest + 1
                prev_open_ms = meta.latest
        async with self._sem:
            async for page in self.rest.iter_klines(
                series.symbol, interval.name, start_ms, end_ms, KLINES_LIMIT, priority
            ):
                result.requests += 1
                result.fetched += len(page)
                now_ms = self.clock.now_ms()
                rows = closed_rows(page, now_ms, end_ms)
                gaps = find_gaps(interval, prev_open_ms, rows)
                if rows or gaps:
                    # a row closed within the REST lag window may be stale: it only fills
                    settled_until_ms = interval.open_of(now_ms - self.rest_lag_ms) - 1
                    packed = packed_rows(rows)
                    bulk = len(rows) >= BULK_ROWS
                    async with self._bulk if bulk else contextlib.nullcontext():
                        written = await self.store.write_candles(
                            series, packed, now_ms, gaps, replace_until_ms=settled_until_ms
                        )
                    result.stored += written.added
                    result.replaced += written.replaced
                    result.kept += written.kept
                    result.latest = written.latest
                    result.gaps.extend(gaps)
                    # a row of the lag window the stream's final candle had not stored
                    # yet: the reconciler re-reads it once settled (one the final did
                    # store is the exchange's own word, and needs no re-read: at the
                    # whole market's start those re-reads took a quarter of history's
                    # weight)
                    if written.filled:
                        result.fresh_added = True
                if rows:
                    prev_open_ms = rows[-1].open_ms
                    result.newest_open_ms = rows[-1].open_ms
                if progress is not None:
                    progress(result, page[-1].open_ms)
                if len(rows) < len(page):
                    break  # reached the forming candle
                if rows and interval.next_open(interval.next_open(rows[-1].open_ms)) > now_ms:
                    break  # the next candle is still forming: a request would bring no row
        if result.latest is None:
            result.latest = (await self.store.meta(series)).latest
        st = self.status.setdefault(series, SeriesStatus())
        st.last_sync_ms, st.latest, st.last_error = self.clock.now_ms(), result.latest, None
        st.syncs += 1
        st.stored += result.stored
        self.replaced += result.replaced
        if result.fresh_added and self.reconciler is not None:
            self.reconciler.suspect(series, result.newest_open_ms)
        async with self._synced:
            self.syncs += 1
            self._synced.notify_all()
        return result

    async def wait_syncs(self, n: int) -> None:
        """Return once ``n`` syncs have completed in all (for health checks and tests)."""
        async with self._synced:
            await self._synced.wait_for(lambda: self.syncs >= n)

    # -- series ---------------------------------------------------------------------------

    @property
    def series(self) -> list[SeriesKey]:
        """The series followed, in order of addition."""
        return list(self._followed)

    def add_series(self, series: SeriesKey) -> None:
        """Follow ``series`` (its first sync is due at once)."""
        self.unknown_symbols.discard(series.symbol)  # listed (again)
        if series in self._followed:
            return
        self._followed[series] = None
        self.status.setdefault(series, SeriesStatus())
        self._dropped[series] = asyncio.Event()
        self._due.schedule(series, 0)
        if self.reconciler is not None:
            self.reconciler.add(series)

    def remove_series(self, series: SeriesKey) -> None:
        """Stop following ``series`` (its data stays)."""
        self._followed.pop(series, None)
        self._due.cancel(series)
        if self.reconciler is not None:
            self.reconciler.remove(series)
        dropped = self._dropped.get(series)
        if dropped is not None:
            dropped.set()

    # -- scheduling -----------------------------------------------------------------------

    def request(self, series: SeriesKey, open_ms: int | None = None) -> None:
        """A candle of ``series`` closed (the live stream says so): look for it once the
        stream's final kline had time to be stored, and fetch it if it is missing."""
        if series not in self._followed or series in self._busy:
            return
        due_ms = self.clock.now_ms() + self.settle_ms
        if open_ms is not None:
            closed_ms = series.interval.next_open(series.interval.open_of(open_ms))
            due_ms = max(due_ms, closed_ms + self.stream_grace_ms)
        current_ms = self._due.due_ms(series)
        if current_ms is None or due_ms < current_ms:
            self._due.schedule(series, due_ms)

    def _after_close_ms(self, series: SeriesKey, filled_ms: int) -> int:
        """When the stream's final kline of the candle after ``filled_ms`` will have had
        its grace."""
        interval = series.interval
        return interval.next_open(interval.next_open(filled_ms)) + self.stream_grace_ms

    async def run(self) -> None:
        """Keep every series current until cancelled: one scheduler, ``concurrency``
        workers sending the REST requests, and the reconciler."""
        async with asyncio.TaskGroup() as tasks:
            for n in range(self.concurrency):
                tasks.create_task(self._worker(), name=f"fetch-worker-{n}")
            if self.reconciler is not None:
                tasks.create_task(self.reconciler.run(), name="fetch-reconciler")
            tasks.create_task(self._scheduler(), name="fetch-scheduler")

    async def run_series(self, series: SeriesKey) -> None:
        """Keep ``series`` current with the shared scheduler (started by the first
        caller, stopped when the last one is cancelled); returns if the series is
        dropped (a symbol the exchange does not know)."""
        self.add_series(series)
        self._users += 1
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self.run(), name="fetcher")
        dropped = asyncio.ensure_future(self._dropped[series].wait())
        try:
            await asyncio.wait({self._runner, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if self._runner.done() and not dropped.done():
                await self._runner  # raises what stopped it
        finally:
            dropped.cancel()
            self._users -= 1
            if self._users == 0 and self._runner is not None:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._runner
                self._runner = None

    async def _scheduler(self) -> None:
        while True:
            now_ms = self.clock.now_ms()
            due = [s for s in self._due.pop_due(now_ms) if s not in self._busy]
            if due:
                await self._dispatch(due)
            else:
                await self._due.wait(now_ms, 3600.0)

    async def _dispatch(self, due: list[SeriesKey]) -> None:
        """Queue a REST job for each due series still missing candles: pipelined store
        reads, ``CHECK_BATCH`` series a round trip."""
        now_ms = self.clock.now_ms()
        checks: list[tuple[SeriesKey, int, int]] = []
        firsts: list[SeriesKey] = []
        for series in due:
            filled_ms = self.status[series].filled_ms
            if filled_ms is None:
                firsts.append(series)
            else:  # up to the newest candle whose stream final had its grace
                interval = series.interval
                newest_ms = interval.shift(interval.open_of(now_ms - self.stream_grace_ms), -1)
                checks.append((series, filled_ms, newest_ms))
        for n in range(0, len(firsts), CHECK_BATCH):
            await self._queue_firsts(firsts[n : n + CHECK_BATCH])
        for n in range(0, len(checks), CHECK_BATCH):
            batch = checks[n : n + CHECK_BATCH]
            try:
                await self._check(batch)
            except StoreError as e:
                self.storage_error = f"Redis: {type(e).__name__}: {e}"[:300]
                for series, _, _ in batch:
                    st = self.status[series]
                    if st.last_error is None:
                        log.warning("%s: %s", series, self.storage_error)
                    st.last_error = self.storage_error
                    self._due.schedule(series, now_ms + int(st.backoff.next_s() * 1000))

    async def _queue_firsts(self, firsts: list[SeriesKey]) -> None:
        """Queue the first sync of each series with its meta read for all of them in one
        round trip, not one each (the whole market's history starts with ~10,000). A
        meta a little old by the time its job runs is a lower bound of what is stored:
        the sync then starts no later than it should."""
        try:
            metas: list[Meta | None] = list(await self.store.metas(firsts))
        except StoreError:  # each job reads its own (and meets the error itself)
            metas = [None] * len(firsts)
        for series, meta in zip(firsts, metas, strict=True):
            self._queue(_Job(series, None, None, Priority.HISTORY, meta))

    async def _check(self, checks: list[tuple[SeriesKey, int, int]]) -> None:
        present = await self.store.present_opens(checks)
        self.checks += len(checks)
        # open times not stored: inside a recorded exchange gap, or missing (rare: read
        # the gaps of those series only)
        holes = [
            (c, p)
            for c, p in zip(checks, present, strict=True)
            if first_missing(c[0].interval, c[1], c[2], p, ()) is not None
        ]
        gaps = await self.store.gaps_between([c for c, _ in holes]) if holes else []
        missing = {
            c[0]: first_missing(c[0].interval, c[1], c[2], p, g)
            for (c, p), g in zip(holes, gaps, strict=True)
        }
        self.storage_error = None
        for (series, filled_ms, newest_ms), found in zip(checks, present, strict=True):
            st = self.status[series]
            missing_ms = missing.get(series)
            if missing_ms is None:
                if st.last_error is not None:  # the stream stored what REST failed to get
                    st.last_error = None
                    await self.store.set_error(series, None)
                st.filled_ms = max(filled_ms, newest_ms)
                if found:
                    st.latest = max(st.latest or 0, found[-1])
                self._due.schedule(series, self._after_close_ms(series, st.filled_ms))
                continue
            recent_ms = series.interval.shift(newest_ms, -CLOSED_CANDLES)
            priority = Priority.CLOSED if missing_ms > recent_ms else Priority.HISTORY
            prev_ms = series.interval.shift(missing_ms, -1)
            self._queue(_Job(series, missing_ms, max(prev_ms, filled_ms), priority))

    def _queue(self, job: _Job) -> None:
        self._busy.add(job.series)
        self._jobs.put_nowait(job)

    async def _worker(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                due_ms = await self._run_job(job)
            except Exception as e:  # not the exchange's or Redis's failure (the job handles
                # those): a defect, or an answer we cannot read. This series again later,
                # the others go on (the worker ended, and the series were never due again)
                log.exception("%s: sync failed", job.series)
                st = self.status.setdefault(job.series, SeriesStatus())
                st.last_error = f"{type(e).__name__}: {e}"[:300]
                due_ms = self.clock.now_ms() + int(st.backoff.next_s() * 1000)
            finally:
                self._busy.discard(job.series)
            if due_ms is not None and job.series in self._followed:
                self._due.schedule(job.series, due_ms)

    async def _start_of(
        self, series: SeriesKey, meta: Meta | None = None
    ) -> tuple[int | None, int | None, bool]:
        """Where the first sync of a series starts: a backfill while the stored history is
        shorter than ``backfill_candles`` (the stream may have stored its first finals
        already); else the first hole among the newest stored candles (a stream may have
        stored later ones), else after the newest. And whether a previous run left an
        error in the series' meta (cleared once a sync succeeds). ``meta``: the series'
        meta if already read."""
        if meta is None:
            meta = await self.store.meta(series)
        start_ms, prev_ms = await self._start_after(series, meta)
        return start_ms, prev_ms, meta.last_error is not None

    async def _start_after(self, series: SeriesKey, meta: Meta) -> tuple[int | None, int | None]:
        interval = series.interval
        backfill_ms = interval.shift(interval.open_of(self.clock.now_ms()), -self.backfill_candles)
        if meta.latest is None or meta.earliest is None or meta.earliest > backfill_ms:
            return backfill_ms, None
        after_ms = max(
            interval.shift(meta.latest, -START_CHECK_CANDLES), interval.shift(meta.earliest, -1)
        )
        # the whole backfill range counted first (cheap): a hole older than the newest
        # candles (REST out of reach for longer while the stream stored its finals, then
        # a restart) is looked for there too, not left for ever
        whole_ms = max(interval.shift(backfill_ms, -1), interval.shift(meta.earliest, -1))
        if whole_ms < after_ms and await self._has_hole(series, whole_ms, meta.latest):
            after_ms = whole_ms
        check = [(series, after_ms, meta.latest)]
        ((present,), (gaps,)) = (
            await self.store.present_opens(check),
            await self.store.gaps_between(check),
        )
        missing_ms = first_missing(interval, after_ms, meta.latest, present, gaps)
        if missing_ms is None:
            return meta.latest + 1, meta.latest
        return missing_ms, interval.shift(missing_ms, -1)

    async def _has_hole(self, series: SeriesKey, after_ms: int, until_ms: int) -> bool:
        """Fewer candles stored in ``(after_ms, until_ms]`` than open times outside the
        recorded exchange gaps."""
        interval = series.interval
        (gaps,) = await self.store.gaps_between([(series, after_ms, until_ms)])
        expected = opens_between(interval, after_ms, until_ms)
        for first, nxt in gaps:
            lo = max(interval.shift(first, -1), after_ms)
            expected -= opens_between(interval, lo, min(interval.shift(nxt, -1), until_ms))
        return await self.store.count_between(series, after_ms, until_ms) < expected

    async def _run_job(self, job: _Job) -> int | None:
        """One REST sync; returns when the series is due again (None: never)."""
        series = job.series
        st = self.status[series]
        try:
            start_ms, prev_ms = job.start_ms, job.prev_open_ms
            had_error = st.last_error is not None
            if start_ms is None:
                start_ms, prev_ms, left_error = await self._start_of(series, job.meta)
                had_error = had_error or left_error
            result = await self.sync(series, start_ms, None, None, job.priority, prev_ms)
            st.backoff.reset()
            self.storage_error = None
            if had_error:  # (or an error a previous run left in meta)
                await self.store.set_error(series, None)
        except StoreError as e:  # Redis down, paused or full: transient, like the exchange's
            self.storage_error = f"Redis: {type(e).__name__}: {e}"[:300]
            await self._record(series, self.storage_error)
            return self.clock.now_ms() + int(st.backoff.next_s() * 1000)
        except BinanceBanned as e:
            await self._record(series, str(e))
            return max(e.until_ms, self.clock.now_ms() + 1000)
        except BinanceError as e:
            await self._record(series, str(e))
            if e.code == -1121:
                self.unknown_symbols.add(series.symbol)
                log.error("%s: %s; not fetching it again", series, e)
                self.remove_series(series)
                return None
            return self.clock.now_ms() + int(st.backoff.next_s() * 1000)
        except BinanceUnavailable as e:
            await self._record(series, str(e))
            return self.clock.now_ms() + int(st.backoff.next_s() * 1000)
        interval = series.interval
        now_ms = self.clock.now_ms()
        newest_ms = interval.shift(interval.open_of(now_ms), -1)
        reached_ms = result.newest_open_ms
        if result.gaps:
            reached_ms = max(reached_ms or 0, interval.shift(result.gaps[-1][1], -1))
        if reached_ms is not None:
            st.filled_ms = max(st.filled_ms or reached_ms, reached_ms)
        elif st.filled_ms is None and result.latest is not None:
            st.filled_ms = result.latest
        if st.filled_ms is not None and st.filled_ms >= newest_ms:
            st.retry_ms = 250
            return max(self._after_close_ms(series, st.filled_ms), now_ms + self.min_gap_ms)
        # the candle has closed but the exchange does not show it final yet
        wait_ms = st.retry_ms
        st.retry_ms = min(self.retry_cap_ms, st.retry_ms * 2)
        return now_ms + wait_ms

    async def _record(self, series: SeriesKey, error: str) -> None:
        st = self.status.setdefault(series, SeriesStatus())
        # the first error of a streak is a warning; repeats while it lasts are not news
        log.log(
            logging.WARNING if st.last_error is None else logging.DEBUG, "%s: %s", series, error
        )
        st.last_error = error
        with contextlib.suppress(Exception):
            await self.store.set_error(series, error)

    async def listen_closed(self) -> None:
        """Turn ``candle_closed`` messages (each names every candle that closed in one
        flush of the live writer: ``store.closings``) into checks of the store;
        ``listening`` is set once Redis has confirmed the subscription."""
        self.listening.clear()
        async for _, data in self.store.listen(
            self.store.keys.closed_channel, subscribed=self.listening.set
        ):
            try:
                closed = decode_closings(data)
            except ValueError:  # not such a message
                continue
            for series, open_ms in closed:
                self.request(series, open_ms)

    async def prepare(self) -> None:
        """Server clock and rate limits from the exchange; unknown symbols reported."""
        await self.rest.server_time()
        info = await self.rest.exchange_info()
        listed = {s.symbol for s in info.symbols}
        for s in {k.symbol for k in self.series} - listed:
            self.unknown_symbols.add(s)
            log.error("symbol %s is not listed by the exchange; it will not be fetched", s)
        for series in [k for k in self.series if k.symbol in self.unknown_symbols]:
            self.remove_series(series)

    async def keep_clock(self, period_s: float = 600.0) -> None:
        while True:
            await asyncio.sleep(period_s)
            await self.rest.server_time()

    def snapshot(self) -> dict[str, Any]:
        return {
            str(s): {
                "latest": st.latest,
                "last_sync_ms": st.last_sync_ms,
                "last_error": st.last_error,
                "syncs": st.syncs,
                "filled_ms": st.filled_ms,
            }
            for s, st in self.status.items()
        }
