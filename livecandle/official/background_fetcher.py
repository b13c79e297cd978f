"""background_fetcher: official klines from Binance REST into ``klines_z``.

Per series: backfill on first start (the last N candles), then stay current by fetching
from ``klines_meta.latest`` forward. Only closed candles are stored: a row is closed when
its close time has passed on the server clock, and the last row of an answer that reaches
"now" (Binance's forming kline) is never stored. Open times missing between rows the
exchange did return are recorded as exchange gaps, so they are not fetched again.
A fetch runs when the next candle has closed, or at once when the live stream says a
candle just closed (``candle_closed`` channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from livecandle.backoff import Backoff
from livecandle.domain.clock import ServerClock
from livecandle.domain.intervals import Interval
from livecandle.domain.model import SeriesKey
from livecandle.exchange.binance.parse import KlineRow, kline_member
from livecandle.exchange.binance.rest import (
    KLINES_LIMIT,
    BinanceBanned,
    BinanceError,
    BinanceRest,
    BinanceUnavailable,
)
from livecandle.store import Store, StoreError

log = logging.getLogger(__name__)

# The last row of an answer reaching "now" is kept only if it closed this long ago
# (guards against clock skew: the exchange may still be filling it).
FORMING_GRACE_MS = 5_000
# Retries of a failing series: 1-2 s, 2-4 s, 4-8 s ... up to 30-60 s.
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0


@dataclass
class SyncResult:
    series: SeriesKey
    fetched: int = 0
    stored: int = 0
    replaced: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    latest: int | None = None
    requests: int = 0


@dataclass
class SeriesStatus:
    last_sync_ms: int | None = None
    last_error: str | None = None
    latest: int | None = None
    syncs: int = 0
    stored: int = 0


def closed_rows(page: Sequence[KlineRow], now_ms: int, reaches_now: bool) -> list[KlineRow]:
    """The rows of ``page`` that are final: closed by ``now_ms``, and not the trailing
    (forming) row of an answer that reaches now unless it closed well before."""
    rows = [r for r in page if r.close_ms < now_ms]
    if (
        reaches_now
        and rows
        and rows[-1] is page[-1]
        and rows[-1].close_ms >= now_ms - FORMING_GRACE_MS
    ):
        rows.pop()
    return rows


def find_gaps(
    interval: Interval, prev_open_ms: int | None, rows: Sequence[KlineRow]
) -> list[tuple[int, int]]:
    """``(first missing open, next present open)`` for each hole between ``prev_open_ms``
    (the newest stored candle, if any) and the rows, and between consecutive rows."""
    gaps = []
    for r in rows:
        if prev_open_ms is not None:
            expected_ms = interval.next_open(prev_open_ms)
            if r.open_ms > expected_ms:
                gaps.append((expected_ms, r.open_ms))
        prev_open_ms = r.open_ms
    return gaps


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
    ) -> None:
        self.store = store
        self.rest = rest
        self.clock = clock or rest.clock
        self.series = list(series)
        self.backfill_candles = backfill_candles
        self.settle_ms = settle_ms
        self.min_gap_ms = min_gap_ms
        self.retry_cap_ms = retry_cap_ms
        self._sem = asyncio.Semaphore(concurrency)
        self._wake: dict[SeriesKey, asyncio.Event] = {s: asyncio.Event() for s in self.series}
        self.status: dict[SeriesKey, SeriesStatus] = {s: SeriesStatus() for s in self.series}
        self.unknown_symbols: set[str] = set()
        self.syncs = 0
        self._synced = asyncio.Condition()
        self.listening = asyncio.Event()  # listen_closed is subscribed
        self.storage_error: str | None = None  # the last Redis failure, until a sync succeeds

    # -- one sync -------------------------------------------------------------------------

    async def sync(
        self,
        series: SeriesKey,
        start_ms: int | None = None,
        end_ms: int | None = None,
        progress: Callable[[SyncResult, int], None] | None = None,
    ) -> SyncResult:
        """Fetch and store closed candles of ``series``.

        Without ``start_ms``: from ``klines_meta.latest`` forward, or the last
        ``backfill_candles`` on first start. With it: ``[start_ms, end_ms]`` (backfill).
        """
        interval = series.interval
        result = SyncResult(series)
        now_ms = self.clock.now_ms()
        prev_open_ms: int | None = None
        if start_ms is None:
            meta = await self.store.meta(series)
            if meta.latest is None:
                start_ms = interval.shift(interval.open_of(now_ms), -self.backfill_candles)
            else:
                start_ms = meta.latest + 1
                prev_open_ms = meta.latest
        async with self._sem:
            async for page in self.rest.iter_klines(
                series.symbol, interval.name, start_ms, end_ms, KLINES_LIMIT
            ):
                result.requests += 1
                result.fetched += len(page)
                now_ms = self.clock.now_ms()
                reaches_now = len(page) < KLINES_LIMIT and (end_ms is None or end_ms >= now_ms)
                rows = closed_rows(page, now_ms, reaches_now)
                gaps = find_gaps(interval, prev_open_ms, rows)
                if rows or gaps:
                    written = await self.store.write_candles(
                        series, [(r.open_ms, kline_member(r)) for r in rows], now_ms, gaps
                    )
                    result.stored += written.added
                    result.replaced += written.replaced
                    result.latest = written.latest
                    result.gaps.extend(gaps)
                if rows:
                    prev_open_ms = rows[-1].open_ms
                if progress is not None:
                    progress(result, page[-1].open_ms)
                if len(rows) < len(page):
                    break  # reached the forming candle
        if result.latest is None:
            result.latest = (await self.store.meta(series)).latest
        st = self.status.setdefault(series, SeriesStatus())
        st.last_sync_ms, st.latest, st.last_error = self.clock.now_ms(), result.latest, None
        st.syncs += 1
        st.stored += result.stored
        async with self._synced:
            self.syncs += 1
            self._synced.notify_all()
        return result

    async def wait_syncs(self, n: int) -> None:
        """Return once ``n`` syncs have completed in all (for health checks and tests)."""
        async with self._synced:
            await self._synced.wait_for(lambda: self.syncs >= n)

    # -- scheduling -----------------------------------------------------------------------

    def add_series(self, series: SeriesKey) -> None:
        """Follow ``series`` (a new listing); its ``run_series`` is started by the caller."""
        if series not in self._wake:
            self.series.append(series)
            self._wake[series] = asyncio.Event()
            self.status.setdefault(series, SeriesStatus())
        self.unknown_symbols.discard(series.symbol)

    def remove_series(self, series: SeriesKey) -> None:
        """Stop following ``series`` (its symbol left TRADING); the caller cancels its
        ``run_series``. What is stored stays."""
        if series in self._wake:
            self.series.remove(series)
            del self._wake[series]
        self.status.pop(series, None)

    def request(self, series: SeriesKey) -> None:
        """Fetch ``series`` now (a candle just closed)."""
        event = self._wake.get(series)
        if event is not None:
            event.set()

    def _due_ms(self, series: SeriesKey, latest_ms: int | None) -> int:
        """When the next unstored candle will have closed."""
        interval = series.interval
        if latest_ms is None:
            return self.clock.now_ms() + self.retry_cap_ms
        return interval.next_open(interval.next_open(latest_ms)) + self.settle_ms

    async def run_series(self, series: SeriesKey) -> None:
        """Keep one series current until cancelled; errors are recorded and retried."""
        wake = self._wake.setdefault(series, asyncio.Event())
        retry_ms = 250
        backoff = Backoff(RETRY_BASE_S, RETRY_CAP_S)
        while True:
            wake.clear()
            latest_before_ms = self.status[series].latest
            try:
                result = await self.sync(series)
                backoff.reset()
                self.storage_error = None
                await self.store.set_error(series, None)
            except StoreError as e:  # Redis down, paused or full: transient, like the exchange's
                self.storage_error = f"Redis: {type(e).__name__}: {e}"[:300]
                await self._record(series, self.storage_error)
                await backoff.sleep()
                continue
            except BinanceBanned as e:
                await self._record(series, str(e))
                ban_s = max(1.0, (e.until_ms - self.clock.now_ms()) / 1000)
                await asyncio.sleep(ban_s)
                continue
            except BinanceError as e:
                await self._record(series, str(e))
                if e.code == -1121:
                    self.unknown_symbols.add(series.symbol)
                    log.error("%s: %s; not fetching it again", series, e)
                    return
                await backoff.sleep()
                continue
            except BinanceUnavailable as e:
                await self._record(series, str(e))
                await backoff.sleep()
                continue
            now_ms = self.clock.now_ms()
            due_ms = self._due_ms(series, result.latest)
            if result.latest is not None and result.latest == latest_before_ms and due_ms <= now_ms:
                # the candle has closed but the exchange does not show it final yet
                wait_ms = retry_ms
                retry_ms = min(self.retry_cap_ms, retry_ms * 2)
            else:
                retry_ms = 250
                wait_ms = max(self.min_gap_ms, due_ms - now_ms)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_ms / 1000):  # not wait_for: 3.11 can
                    await wake.wait()  # swallow a cancel that races the event
            if wake.is_set():
                await asyncio.sleep(self.min_gap_ms / 1000 * 0.1)

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
        """Turn ``candle_closed`` messages into immediate fetches; ``listening`` is set
        once Redis has confirmed the subscription."""
        self.listening.clear()
        async for _, data in self.store.listen(
            self.store.keys.closed_channel, subscribed=self.listening.set
        ):
            try:
                message = msgspec.json.decode(data)
                series = SeriesKey.of(message["symbol"], message["interval"])
            except (msgspec.DecodeError, KeyError, ValueError, TypeError):
                continue
            self.request(series)

    async def prepare(self) -> None:
        """Server clock and rate limits from the exchange; unknown symbols reported."""
        await self.rest.server_time()
        info = await self.rest.exchange_info()
        listed = {s.symbol for s in info.symbols}
        for s in {k.symbol for k in self.series} - listed:
            self.unknown_symbols.add(s)
            log.error("symbol %s is not listed by the exchange; it will not be fetched", s)

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
            }
            for s, st in self.status.items()
        }
