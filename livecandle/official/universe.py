"""Universe: the exchange's listing followed at run time.

Reads the listing (``exchangeInfo``, through an injectable ``ListingSource`` so tests
can drive listings, delistings and status changes), resolves the configured
``Selection`` against it (``domain.universe``), keeps the result in Redis (the
``universe`` hash: status and since when, base and quote assets, tick size, followed)
so that a web process apart serves the same symbols, and tells its listeners which
symbols to start and stop following. Re-read every ``period_s`` (weight 20 each time).

With ``OnDemand`` settings it also follows the symbols clients asked the proxy for
(``store.demand``: admitted there up to the cap, read every ``period_s`` of its own),
marks them warm once ``warm`` says their history is stored, and stops following those
nobody asked for in ``idle_s`` (their stored data is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from livecandle.domain.universe import (
    ON_DEMAND,
    TRADING,
    Change,
    Demand,
    Listing,
    Selection,
    SymbolEntry,
    resolve,
)
from livecandle.exchange.binance.rest import BinanceError, BinanceRest, BinanceUnavailable
from livecandle.store import Store, StoreError
from livecandle.store.demand import DemandStore

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


@dataclass(frozen=True, slots=True)
class OnDemand:
    """Following symbols on demand: at most ``cap`` (0: none), each until nobody asked
    for it in ``idle_s``; the wanted set read every ``period_s``."""

    cap: int = 200
    idle_s: float = 86_400.0
    period_s: float = 1.0


class Universe:
    """The followed symbols of one process, kept in step with the exchange's listing
    (and with the symbols wanted on demand)."""

    def __init__(
        self,
        store: Store,
        selection: Selection,
        source: ListingSource,
        now_ms: Callable[[], int],
        period_s: float = 60.0,
        following: Iterable[str] = (),
        on_demand: OnDemand | None = None,
        warm: Callable[[str], bool] | None = None,
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
        self.on_demand = on_demand
        self.demand_store = DemandStore(store) if on_demand is not None else None
        self.warm = warm  # a symbol's history is stored (the fetcher's word), if known here
        self.demand: dict[str, Demand] = {}  # admitted, as last read
        self.demand_error: str | None = None
        self._listings: list[Listing] | None = None  # the last reading of the listing
        self._lock = asyncio.Lock()  # one resolution at a time (listing and demand loops)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(change)`` after each reading that changes what is followed."""
        self._listeners.append(listener)

    async def refresh(self) -> Change:
        """Read the listing once; store what changed; tell the listeners."""
        listings = list(await self.source())
        async with self._lock:
            self._listings = listings
            return await self._apply(listings)

    async def refresh_demand(self) -> Change:
        """Read the symbols wanted on demand (admitting up to the cap, dropping the idle
        ones); mark warm the followed ones whose history is stored; follow and stop."""
        if self.on_demand is None or self.demand_store is None or self._listings is None:
            return Change()
        ds, od = self.demand_store, self.on_demand
        async with self._lock:
            now = self.now_ms()
            demand = await ds.admit(now, int(od.idle_s * 1000), od.cap)
            by_name = {lst.symbol: lst for lst in self._listings}
            # a wish needs no demand when the selection selects the symbol anyway, and
            # takes no slot while the symbol is not TRADING (asked again, it is wanted again)
            needless = [
                s
                for s in demand
                if (lst := by_name.get(s)) is None
                or lst.status != TRADING
                or self.selection.selects(lst)
            ]
            if needless:
                await ds.release(needless)
                for s in needless:
                    del demand[s]
            if self.warm is not None:
                ready = [
                    s
                    for s, d in demand.items()
                    if not d.warm_ms and s in self.following and self.warm(s)
                ]
                if await ds.mark_warm(ready, now):
                    demand = {
                        s: Demand(d.since_ms, d.asked_ms, now) if s in ready else d
                        for s, d in demand.items()
                    }
            if demand == self.demand and not self.unstored:
                return Change()  # nothing new: no resolution of the whole listing
            self.demand = demand
            return await self._apply(self._listings)

    async def _apply(self, listings: Sequence[Listing]) -> Change:
        known = self.entries
        if not known:  # first reading: since when, from what an earlier run stored
            with contextlib.suppress(StoreError):  # Redis down or full: from now on
                known = await self.store.universe()
        entries, change = resolve(
            self.selection, known, listings, self.now_ms(), self.following, self.demand
        )
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
                "stopping %d symbols: %s",
                len(change.stop),
                ", ".join(f"{s} ({_why_stopped(entries.get(s))})" for s in change.stop[:20]),
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

    async def run_demand(self) -> None:
        """``refresh_demand`` every ``on_demand.period_s`` until cancelled; a failure
        (Redis) is said once and tried again next period."""
        assert self.on_demand is not None
        while True:
            await asyncio.sleep(self.on_demand.period_s)
            try:
                await self.refresh_demand()
                if self.demand_error is not None:
                    log.warning("the symbols wanted on demand are read again")
                self.demand_error = None
            except StoreError as e:
                if self.demand_error is None:
                    log.warning("cannot read the symbols wanted on demand: %s", e)
                self.demand_error = str(e)

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
            **({"on_demand": self.demand_stats()} if self.on_demand is not None else {}),
        }

    def demand_stats(self) -> dict[str, Any]:
        assert self.on_demand is not None
        followed = [s for s, e in self.entries.items() if e.demand == ON_DEMAND and e.followed]
        return {
            "followed": len(followed),
            "warm": sum(1 for s in followed if self.entries[s].warm_ms),
            "cap": self.on_demand.cap,
            "idle_s": self.on_demand.idle_s,
            "error": self.demand_error,
        }


def _few(symbols: Sequence[str], n: int = 20) -> str:
    shown = ", ".join(symbols[:n])
    return shown + (f" and {len(symbols) - n} more" if len(symbols) > n else "")


__all__ = ["TRADING", "Universe", "exchange_listing"]


def _why_stopped(entry: SymbolEntry | None) -> str:
    if entry is None:
        return "delisted"
    if entry.status == TRADING:
        return f"{TRADING}, no longer asked for"
    return entry.status
