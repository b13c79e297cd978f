"""Universe: the exchange's listing followed at run time.

Reads the listing (``exchangeInfo``, through an injectable ``ListingSource`` so tests
can drive listings, delistings and status changes), resolves the configured
``Selection`` against it (``domain.universe``), keeps the result in Redis (the
``universe`` hash: status and since when, base and quote assets, tick size, followed)
so that a web process apart serves the same symbols, and tells its listeners which
symbols to start and stop following. Re-read every ``period_s`` (weight 20 each time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from livecandle.domain.universe import TRADING, Change, Listing, Selection, SymbolEntry, resolve
from livecandle.exchange.binance.rest import BinanceError, BinanceRest, BinanceUnavailable
from livecandle.store import Store, StoreError

log = logging.getLogger(__name__)

ListingSource = Callable[[], Awaitable[Sequence[Listing]]]
Listener = Callable[[Change], Awaitable[None] | None]


def exchange_listing(rest: BinanceRest) -> ListingSource:
    """The exchange's ``exchangeInfo`` (all symbols) as listings."""

    async def read() -> list[Listing]:
        info = await rest.exchange_info()
        return [
            Listing(s.symbol, s.status, s.baseAsset, s.quoteAsset, _tick_size(s.filters))
            for s in info.symbols
        ]

    return read


def _tick_size(filters: Iterable[dict[str, Any]]) -> str:
    for f in filters:
        if f.get("filterType") == "PRICE_FILTER":
            return str(f.get("tickSize", ""))
    return ""


class Universe:
    """The followed symbols of one process, kept in step with the exchange's listing."""

    def __init__(
        self,
        store: Store,
        selection: Selection,
        source: ListingSource,
        now_ms: Callable[[], int],
        period_s: float = 60.0,
        following: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.selection = selection
        self.source = source
        self.now_ms = now_ms
        self.period_s = period_s
        self.entries: dict[str, SymbolEntry] = {}
        # what the process follows now (at start: the explicit names it was built with)
        self.following: set[str] = set(following)
        self.refreshes = 0
        self.last_error: str | None = None
        self.ready = asyncio.Event()  # the listing was read once
        self.unstored = False  # a write to Redis failed: the next one writes everything
        self._listeners: list[Listener] = []
        self._reported: set[str] = set()

    def listen(self, listener: Listener) -> None:
        """Call ``listener(change)`` after each reading that changes what is followed."""
        self._listeners.append(listener)

    async def refresh(self) -> Change:
        """Read the listing once; store what changed; tell the listeners."""
        listings = await self.source()
        known = self.entries
        if not known:  # first reading: since when, from what an earlier run stored
            with contextlib.suppress(StoreError):  # Redis down or full: from now on
                known = await self.store.universe()
        entries, change = resolve(self.selection, known, listings, self.now_ms(), self.following)
        # following goes on while Redis refuses writes (full, down): stored once it takes
        changed = [e for s, e in entries.items() if self.unstored or known.get(s) != e]
        try:
            await self.store.write_universe(changed)
            self.unstored = False
        except StoreError as e:
            if not self.unstored:
                log.warning("cannot store the universe (%s); following it all the same", e)
            self.unstored = True
        self.entries = entries
        self.following = {s for s, e in entries.items() if e.followed}
        self.refreshes += 1
        self.last_error = None
        for name in change.not_trading:
            if name not in self._reported:
                entry = entries.get(name)
                status = entry.status if entry is not None else "not listed"
                log.error("symbol %s is %s on the exchange; it is not followed", name, status)
        self._reported = set(change.not_trading)
        if change.follow:
            log.info("following %d more symbols: %s", len(change.follow), _few(change.follow))
        if change.stop:
            log.warning(
                "stopping %d symbols that left TRADING: %s",
                len(change.stop),
                ", ".join(
                    f"{s} ({entries[s].status if s in entries else 'delisted'})"
                    for s in change.stop[:20]
                ),
            )
        if change:
            for listener in self._listeners:
                try:  # one failing listener (e.g. a web reading Redis) stops no other
                    result = listener(change)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("a listener of the universe failed on %s", change)
        self.ready.set()
        return change

    async def run(self) -> None:
        """Re-read the listing every ``period_s`` until cancelled; a failed reading is
        said once and tried again next period (what is followed stays as it is)."""
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.refresh()
            except (BinanceError, BinanceUnavailable, StoreError) as e:
                if self.last_error is None:
                    log.warning("cannot re-read the exchange's listing: %s", e)
                self.last_error = str(e)

    def stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for e in self.entries.values():
            by_status[e.status.lower()] = by_status.get(e.status.lower(), 0) + 1
        return {
            "followed": len(self.following),
            "known": len(self.entries),
            "by_status": by_status,
            "refreshes": self.refreshes,
            "error": self.last_error,
            "not_trading": sorted(self._reported),
        }


def _few(symbols: Sequence[str], n: int = 20) -> str:
    shown = ", ".join(symbols[:n])
    return shown + (f" and {len(symbols) - n} more" if len(symbols) > n else "")


__all__ = ["TRADING", "Universe", "exchange_listing"]
