"""Reconciler: recent closed candles re-read over REST, stored rows that differ replaced.

Binance's REST klines can lag just after a close (the just-closed candle changes between
two calls), and archives have been corrected after the fact. So each series is re-read
once its newest candles closed more than ``rest_lag_ms`` ago (one request covers every
candle since the last re-read, plus a little overlap), and the REST row then replaces a
different stored one, whatever wrote it. Reading only costs spare weight: a re-read waits
while the fetcher has work or the window's weight is above ``spare_share`` of the budget,
except for a series the fetcher filled over REST within the lag window (a row that may be
stale): that one is re-read as soon as its candle has settled and the fetcher is idle, or
after ``suspect_wait_ms`` (5 minutes) whatever the fetcher does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livecandle.domain.clock import Clock
from livecandle.domain.model import SeriesKey
from livecandle.exchange.binance.parse import kline_member
from livecandle.exchange.binance.rest import KLINES_LIMIT, BinanceBanned, BinanceRest
from livecandle.exchange.binance.weights import Priority
from livecandle.official.due import DueHeap
from livecandle.store import Store

log = logging.getLogger(__name__)

KLINES_WEIGHT = 2  # of one klines request of up to 1000 rows
IDLE_POLL_S = 0.2  # how often a waiting re-read looks for spare weight again
NOT_READY_WAIT_MS = 5_000  # a series not yet synced by the fetcher is looked at again
# a re-read that found nothing newer settled (a halt, the exchange's maintenance): the
# series is read again after this, not at once (one series spinning, the rest starved)
NOTHING_NEW_WAIT_MS = 60_000
# a suspect series waits at most this long for history to be fetched (``_suspect_due``)
SUSPECT_WAIT_MS = 300_000


class Reconciler:
    def __init__(
        self,
        store: Store,
        rest: BinanceRest,
        clock: Clock,
        rest_lag_ms: int = 30_000,
        lookback_candles: int = 3,
        overlap_candles: int = 2,
        spare_share: float = 0.5,
        busy: Callable[[], bool] = lambda: False,
        ready: Callable[[SeriesKey], bool] = lambda series: True,
        suspect_wait_ms: int = SUSPECT_WAIT_MS,
    ) -> None:
        self.store = store
        self.rest = rest
        self.clock = clock
        self.rest_lag_ms = rest_lag_ms
        self.lookback_candles = lookback_candles  # re-read on start, per series
        self.overlap_candles = overlap_candles  # re-read again each time
        self.spare_share = spare_share
        self.busy = busy  # the fetcher has work of higher priority
        self.ready = ready  # the fetcher has synced the series (a backfill goes first)
        self._from: dict[SeriesKey, int] = {}  # open time the next re-read starts at
        self._due: DueHeap[SeriesKey] = DueHeap()
        # series -> when it became suspect
        self._suspect: dict[SeriesKey, int] = {}
        # series -> the newest open time stored from REST within the lag window
        self._suspect_open: dict[SeriesKey, int] = {}
        self.suspect_wait_ms = suspect_wait_ms
        self.reads = 0
        self.rows_checked = 0
        self.replaced = 0  # stored rows that differed from the settled REST row
        self.added = 0  # rows that were missing
        self.errors = 0

    # -- series -------------------------------------------------------------------------

    def add(self, series: SeriesKey) -> None:
        if series in self._from:
            return
        interval = series.interval
        self._from[series] = interval.shift(
            interval.open_of(self.clock.now_ms()), -self.lookback_candles
        )
        self._due.schedule(series, self._settled_ms(series))

    def remove(self, series: SeriesKey) -> None:
        self._from.pop(series, None)
        self._due.cancel(series)
        self._suspect.pop(series, None)
        self._suspect_open.pop(series, None)

    def suspect(self, series: SeriesKey, open_ms: int | None = None) -> None:
        """A row of ``series`` (the newest opening at ``open_ms``) was stored from REST
        within the lag window: re-read it as soon as it has settled, spare weight or not;
        the series stays suspect until a re-read has covered that row."""
        if series in self._from:
            self._suspect.setdefault(series, self.clock.now_ms())
            if open_ms is not None:
                self._suspect_open[series] = max(open_ms, self._suspect_open.get(series, 0))

    @property
    def suspects(self) -> frozenset[SeriesKey]:
        """The series waiting to be re-read as soon as they have settled."""
        return frozenset(self._suspect)

    def _suspect_due(self, series: SeriesKey, now_ms: int) -> bool:
        """A suspect series goes once settled, spare weight or not; while the fetcher
        has history to fetch it waits up to ``suspect_wait_ms``: at the whole market's
        start the rows of candles that closed before the stream ran are all suspect
        (~1,000 re-reads), and history, which users wait for, goes first."""
        due_ms = self._due.due_ms(series)
        if due_ms is None or due_ms > now_ms:
            return False
        return not self.busy() or now_ms - self._suspect[series] >= self.suspect_wait_ms

    def _settled_ms(self, series: SeriesKey) -> int:
        """When the candle the next re-read starts at will have settled."""
        return series.interval.next_open(self._from[series]) + self.rest_lag_ms

    # -- the loop ------------------------------------------------------------------------

    def _spare(self) -> bool:
        budget = self.rest.budget
        budget.observe(0, accepted=False)  # rolls the window over if a new one began
        return (
            not self.busy()
            and budget.blocked_until_ms <= self.clock.now_ms()
            and budget.used + KLINES_WEIGHT <= budget.budget * self.spare_share
        )

    async def run(self) -> None:
        while True:
            series = await self._next_due()
            if series not in self._from:
                continue  # removed while a re-read of it failed
            if not self.ready(series):
                self._due.schedule(series, self.clock.now_ms() + NOT_READY_WAIT_MS)
                continue
            before_ms = self._from[series]
            try:
                await self.reconcile(series)
            except asyncio.CancelledError:
                raise
            except BinanceBanned as e:
                self.errors += 1
                self._due.schedule(series, e.until_ms)
                continue
            except Exception as e:  # the exchange or Redis: try this series again later
                self.errors += 1
                log.debug("reconciling %s failed: %s", series, e)
                self._due.schedule(series, self.clock.now_ms() + 10_000)
                continue
            if series in self._from:
                due_ms = self._settled_ms(series)
                if self._from[series] == before_ms:  # nothing newer had settled
                    due_ms = max(due_ms, self.clock.now_ms() + NOTHING_NEW_WAIT_MS)
                self._due.schedule(series, due_ms)

    async def _next_due(self) -> SeriesKey:
        due = self._due
        while True:
            now_ms = self.clock.now_ms()
            first_ms = due.next_ms()
            if first_ms is not None and first_ms <= now_ms:
                # a suspect series that is due goes first, spare weight or not
                for s in self._suspect:
                    if self._suspect_due(s, now_ms):
                        due.pop(s)
                        return s
                if self._spare():
                    series = due.pop_first(now_ms)
                    assert series is not None
                    return series
                await due.wait(now_ms, IDLE_POLL_S)
            else:
                await due.wait(now_ms)

    async def reconcile(self, series: SeriesKey) -> int:
        """Re-read the settled candles of ``series`` since the last re-read (and a few
        before) and store them, replacing any stored row that differs. Returns the rows
        replaced."""
        interval = series.interval
        start_ms = interval.shift(self._from[series], -self.overlap_candles)
        rows = await self.rest.klines(
            series.symbol, interval.name, start_ms, None, KLINES_LIMIT, Priority.RECONCILE
        )
        self.reads += 1
        now_ms = self.clock.now_ms()
        settled = [r for r in rows if r.close_ms < now_ms - self.rest_lag_ms]
        suspect_ms = self._suspect_open.get(series)
        if suspect_ms is None or (settled and settled[-1].open_ms >= suspect_ms):
            self._suspect.pop(series, None)  # the suspect row was re-read (if any)
            self._suspect_open.pop(series, None)
        if not settled:
            return 0
        result = await self.store.write_candles(
            series, [(r.open_ms, kline_member(r)) for r in settled], now_ms
        )
        self.rows_checked += len(settled)
        self.added += result.added
        self.replaced += result.replaced
        if result.replaced:
            log.warning(
                "%s: reconciliation replaced %d stored row(s) that differed from the "
                "exchange's settled candle (open times %s)",
                series,
                result.replaced,
                ",".join(map(str, result.replaced_opens[:5])),
            )
        if series in self._from:
            self._from[series] = interval.next_open(settled[-1].open_ms)
        return result.replaced
