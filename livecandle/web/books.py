"""Books: the proxy's local order books, one per symbol asked for, kept in sync with the
exchange (``exchange.binance.order_book.LocalBook``: Binance's snapshot + diff algorithm).

A book starts on the first request for its symbol: ``<s>@depth@100ms`` is subscribed on
the manager's own ``BinanceStream`` (one connection for up to 1024 books, Binance's
connection rules kept), and once the first event is buffered a REST snapshot is fetched
through the process's one weight plan at ``Priority.PROXY``. A gap in the events (a
reconnect, a dropped message) makes the book fetch a new snapshot. A book nobody asked
for in ``idle_s`` is stopped (unsubscribed, forgotten). Bounded: at most ``max_books``
books (a symbol past the cap is answered by forwarding), ``max_levels`` per side, a
bounded event buffer. A book is served only while in sync and fed: an event within
``fresh_s`` (a cut connection must not leave a stale book answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from livecandle.exchange.binance.order_book import (
    LocalBook,
    Outcome,
    parse_combined,
    parse_diff,
    parse_snapshot,
)
from livecandle.exchange.binance.rest import BinanceError, BinanceRest, BinanceUnavailable
from livecandle.exchange.binance.stream import BinanceStream
from livecandle.exchange.binance.stream_limits import ConnectionAttempts
from livecandle.exchange.binance.weights import Priority

log = logging.getLogger(__name__)

DEPTH = "/api/v3/depth"


def depth_weight(limit: int) -> int:
    """Binance's weight of ``/api/v3/depth`` by limit."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@dataclass(eq=False)
class _Entry:
    book: LocalBook
    asked_s: float
    event_s: float = 0.0  # monotonic time of the last event
    first_event: asyncio.Event = field(default_factory=asyncio.Event)
    syncing: asyncio.Task[None] | None = None
    snapshots: int = 0


class Books:
    def __init__(
        self,
        rest: BinanceRest,
        ws_url: str,
        idle_s: float = 60.0,
        max_books: int = 100,
        max_levels: int = 1000,
        snapshot_limit: int = 1000,
        fresh_s: float = 10.0,
        first_event_wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        attempts: ConnectionAttempts | None = None,
    ) -> None:
        """``attempts``: the process's websocket connection-attempt budget, when it has
        one already (the stream role's), so the IP's limit is counted once."""
        self.rest = rest
        self.idle_s = idle_s
        self.max_books = max_books
        self.max_levels = max_levels
        self.snapshot_limit = snapshot_limit
        self.fresh_s = fresh_s
        self.first_event_wait_s = first_event_wait_s
        self.clock = clock
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.stream = BinanceStream(ws_url, [], self.queue, attempts=attempts)
        self.entries: dict[str, _Entry] = {}
        self.started = 0
        self.stopped = 0
        self.refused = 0  # symbols not given a book: the cap was reached
        self._tasks: list[asyncio.Task[None]] = []

    # -- asking -------------------------------------------------------------------------

    def book(self, symbol: str, start: bool = True) -> LocalBook | None:
        """The symbol's book if it is in sync and fed now; starts it (within the cap)
        when there is none, unless ``start`` is False. Every call counts as a request:
        it keeps the book alive."""
        now = self.clock()
        entry = self.entries.get(symbol)
        if entry is None:
            if start:
                self._start(symbol, now)
            return None
        entry.asked_s = now
        book = entry.book
        if book.synced and now - entry.event_s < self.fresh_s:
            return book
        return None

    def _start(self, symbol: str, now: float) -> None:
        if len(self.entries) >= self.max_books:
            self.refused += 1
            return
        self._run_tasks()
        entry = _Entry(LocalBook(symbol, self.max_levels), now)
        self.entries[symbol] = entry
        self.stream.subscribe([_stream(symbol)])
        entry.syncing = asyncio.create_task(self._sync(symbol, entry), name=f"book:{symbol}")
        self.started += 1
        log.info("order book of %s started", symbol)

    def stop(self, symbol: str) -> None:
        entry = self.entries.pop(symbol, None)
        if entry is None:
            return
        if entry.syncing is not None and entry.syncing is not asyncio.current_task():
            entry.syncing.cancel()
        self.stream.unsubscribe([_stream(symbol)])
        self.stopped += 1
        log.info("order book of %s stopped", symbol)

    # -- keeping ------------------------------------------------------------------------

    def _run_tasks(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self.stream.run(), name="books:stream"),
            asyncio.create_task(self._dispatch(), name="books:dispatch"),
            asyncio.create_task(self._reap(), name="books:reap"),
        ]

    async def _dispatch(self) -> None:
        while True:
            raw = await self.queue.get()
            try:
                _, data = parse_combined(raw)
                event = parse_diff(data)
            except (msgspec.DecodeError, ValueError):  # a control answer, or not a diff
                continue
            entry = self.entries.get(event.symbol)
            if entry is None:
                continue
            entry.event_s = self.clock()
            entry.first_event.set()
            outcome = entry.book.on_diff(event)
            if outcome == Outcome.GAP:
                log.info("order book of %s: events missed, resyncing", event.symbol)
            if outcome in (Outcome.GAP, Outcome.BUFFERED) and (
                entry.syncing is None or entry.syncing.done()
            ):
                entry.syncing = asyncio.create_task(
                    self._sync(event.symbol, entry), name=f"book:{event.symbol}"
                )

    async def _sync(self, symbol: str, entry: _Entry) -> None:
        """Snapshots until the book is in sync (the first after an event is buffered)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.first_event_wait_s):
                await entry.first_event.wait()
        limit = self.snapshot_limit
        while not entry.book.synced and self.entries.get(symbol) is entry:
            try:
                body = await self.rest.get(
                    DEPTH, {"symbol": symbol, "limit": limit}, Priority.PROXY, depth_weight(limit)
                )
            except (BinanceError, BinanceUnavailable) as e:
                log.warning("order book of %s: no snapshot (%s); stopped", symbol, e)
                self.stop(symbol)
                return
            entry.snapshots += 1
            if entry.book.on_snapshot(parse_snapshot(body)) == Outcome.TOO_OLD:
                await asyncio.sleep(0.1)  # the next snapshot is newer

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_s / 4, 5.0))
            now = self.clock()
            for symbol in [s for s, e in self.entries.items() if now - e.asked_s > self.idle_s]:
                self.stop(symbol)

    async def aclose(self) -> None:
        for symbol in list(self.entries):
            self.stop(symbol)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def stats(self) -> dict[str, Any]:
        return {
            "books": len(self.entries),
            "in_sync": sum(e.book.synced for e in self.entries.values()),
            "started": self.started,
            "stopped": self.stopped,
            "refused": self.refused,
            "gaps": sum(e.book.gaps for e in self.entries.values()),
            "snapshots": sum(e.snapshots for e in self.entries.values()),
        }


def _stream(symbol: str) -> str:
    return f"{symbol.lower()}@depth@100ms"
