"""OlderMinutes: the older 1m candles a followed symbol's ticker window lacks, fetched in
the background (``Status.fetch_older``, the official write path, as the mirror's older
klines are), so that a run whose backfill is shorter than a day answers ``ticker/24hr``
from its own data after one forwarded request instead of after a day.

Bounded: at most one fetch per symbol at a time, at most ``max_candles`` candles a fetch
(a window lacking more is left to the exchange), a symbol tried again at most every
``retry_s`` (a failed fetch, or a listing younger than the window, is not retried on
every request). Failures are logged, never raised: the request was forwarded anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from livecandle.domain.intervals import MINUTE_MS, parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from livecandle.web.status import Status

log = logging.getLogger(__name__)

ONE_MINUTE = parse_interval("1m")


class OlderMinutes:
    def __init__(
        self,
        store: Store,
        status: Status,
        max_candles: int = 1500,
        retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.status = status
        self.max_candles = max_candles
        self.retry_s = retry_s
        self.clock = clock
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self._tried_s: dict[str, float] = {}  # symbol -> when its last fetch started
        self.no_fetcher = False  # this process cannot ask the exchange: never try again
        self.fetches = 0

    def want(self, symbol: str, start_ms: int) -> None:
        """The window of ``symbol`` from ``start_ms`` was not held: fetch the 1m candles
        before the stored ones back to ``start_ms``, unless a fetch runs or ran lately."""
        if self.no_fetcher or symbol in self.in_flight:
            return
        now = self.clock()
        tried = self._tried_s.get(symbol)
        if tried is not None and now - tried < self.retry_s:
            return
        self._tried_s[symbol] = now
        task = asyncio.create_task(self._fetch(symbol, start_ms), name=f"older:{symbol}")
        self.in_flight[symbol] = task
        task.add_done_callback(lambda _: self.in_flight.pop(symbol, None))

    async def _fetch(self, symbol: str, start_ms: int) -> None:
        series = SeriesKey(symbol, ONE_MINUTE)
        try:
            meta = await self.store.meta(series)
            if meta.earliest is None:  # no backfill yet: the next request tries again
                self._tried_s.pop(symbol, None)
                return
            if meta.earliest <= start_ms:
                return  # the lack is elsewhere (a gap, an hour): not ours to fill
            missing = -(-(meta.earliest - start_ms) // MINUTE_MS)
            if missing > self.max_candles:
                log.info("%s: %d older 1m candles missing, more than fetched", symbol, missing)
                return
            self.fetches += 1
            fetched = await self.status.fetch_older(series, meta.earliest - MINUTE_MS, missing)
            if fetched is None:
                self.no_fetcher = True
        except asyncio.CancelledError:
            raise
        except Exception:  # the request was forwarded: a failure costs a later try only
            log.exception("%s: fetching older 1m candles for its ticker failed", symbol)

    async def aclose(self) -> None:
        tasks = list(self.in_flight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
