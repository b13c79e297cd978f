"""The emulator's market: every listed symbol, its status, and one schedule of next trades.

One heap holds each trading symbol's next trade time, so advancing the clock costs in
proportion to the trades revealed, not to the symbols listed: an idle symbol costs
nothing per tick. A symbol's ``SymbolMarket`` (its history and live trades) is made the
first time something asks for it. Each symbol trades as a Poisson process: at
``rate_per_s`` each, or, with a total rate, at a skewed share of it (``universe``).
Listings, status changes and delistings happen at run time; when rates change the
schedule is drawn again from now (a Poisson process is memoryless, so that is exact).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from livecandle.domain.intervals import MINUTE_MS
from livecandle.emulator.market import Revealed, SymbolMarket
from livecandle.emulator.tape import TradeTuple
from livecandle.emulator.universe import STATUSES, weight

NEW_LISTING_RANK = 10  # a fresh listing is busy: it trades like the 10th symbol


class MarketError(ValueError):
    """A run-time change the market refuses (unknown symbol, already listed, bad status)."""


@dataclass
class Listing:
    symbol: str
    rank: int
    weight: float
    status: str = "TRADING"
    listed_ms: int | None = None  # listed at run time (no history before it)
    rate_per_s: float = 0.0


class Symbols(Mapping[str, SymbolMarket]):
    """The listed symbols' markets, each made on first use."""

    def __init__(self, market: Market) -> None:
        self._market = market
        self.made: dict[str, SymbolMarket] = {}

    def __getitem__(self, symbol: str) -> SymbolMarket:
        sm = self.made.get(symbol)
        if sm is None:
            sm = self.made[symbol] = self._market.make(symbol)
        return sm

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._market.listings

    def __iter__(self) -> Iterator[str]:
        return iter(self._market.listings)

    def __len__(self) -> int:
        return len(self._market.listings)


class Market:
    """Every symbol of the emulator, sharing one clock and one trade schedule."""

    def __init__(
        self,
        symbols: tuple[str, ...],
        seed: int,
        start_ms: int,
        rate_per_s: float = 5.0,
        history_days: int = 1100,
        outages_ms: tuple[tuple[int, int], ...] = (),
        total_rate: float | None = None,
    ) -> None:
        self.seed = seed
        self.start_ms = start_ms
        self.live_start = start_ms // MINUTE_MS * MINUTE_MS
        self.history_days = history_days
        self.outages_ms = outages_ms
        self.rate_per_s = rate_per_s
        self.total_rate = total_rate
        self.clock = Revealed(self.live_start - 1)
        self.listings: dict[str, Listing] = {
            s: Listing(s, rank, weight(s, rank, seed)) for rank, s in enumerate(symbols, 1)
        }
        self.symbols = Symbols(self)
        self.trades_total = 0
        self._rng = random.Random(f"schedule-{seed}")
        self._heap: list[tuple[float, str]] = []
        self._per_ms: dict[str, float] = {}  # each trading symbol's rate, trades per ms
        self._pending: dict[str, list[TradeTuple]] = {}
        # live trades start now (not at the minute's start: no burst at start-up)
        self._reschedule(start_ms)

    # -- the schedule -------------------------------------------------------------------

    def _reschedule(self, from_ms: int) -> None:
        trading = [x for x in self.listings.values() if x.status == "TRADING"]
        total_weight = sum(x.weight for x in trading) or 1.0
        for x in self.listings.values():
            x.rate_per_s = 0.0
        for x in trading:
            if self.total_rate is None:
                x.rate_per_s = self.rate_per_s
            else:
                x.rate_per_s = self.total_rate * x.weight / total_weight
        expo = self._rng.expovariate
        self._heap = [
            (from_ms + expo(x.rate_per_s / 1000), x.symbol) for x in trading if x.rate_per_s > 0
        ]
        self._per_ms = {x.symbol: x.rate_per_s / 1000 for x in trading}
        heapq.heapify(self._heap)

    def advance(self, now_ms: int) -> dict[str, list[TradeTuple]]:
        """Reveal every trade with time <= ``now_ms``: the new ones, by symbol."""
        new, self._pending = self._pending, {}  # revealed by a run-time change
        pending = sum(map(len, new.values()))
        if now_ms <= self.clock.ms:
            return new
        heap = self._heap
        per_ms = self._per_ms
        made = self.symbols.made
        rand, log, replace = self._rng.random, math.log, heapq.heapreplace
        while heap and heap[0][0] <= now_ms:
            t, symbol = heap[0]
            sm = made.get(symbol)
            if sm is None:
                sm = made[symbol] = self.make(symbol)
            trade = sm.add_trade(int(t))
            got = new.get(symbol)
            if got is None:
                new[symbol] = [trade]
            else:
                got.append(trade)
            # random.expovariate inline (the same draws): one call less per trade
            replace(heap, (t - log(1.0 - rand()) / per_ms[symbol], symbol))
        self.clock.ms = now_ms
        self.trades_total += sum(map(len, new.values())) - pending
        return new

    def _catch_up(self, now_ms: int) -> None:
        """Reveal trades up to now, kept for the next ``advance`` to hand out."""
        self._pending = self.advance(now_ms)

    def make(self, symbol: str) -> SymbolMarket:
        listing = self.listings.get(symbol)
        if listing is None:
            raise KeyError(symbol)
        live_start = self.live_start if listing.listed_ms is None else listing.listed_ms
        return SymbolMarket(
            symbol,
            self.seed,
            live_start,
            self.history_days if listing.listed_ms is None else 0,
            self.outages_ms,
            clock=self.clock,
            listed_ms=listing.listed_ms,
            cache_share=min(1.0, 2 / max(1, len(self.listings))),
        )

    # -- run-time changes ---------------------------------------------------------------

    def list_symbol(self, symbol: str, now_ms: int, rank: int | None = None) -> Listing:
        """List ``symbol`` now: trading from ``now_ms``, its first kline the one it is in."""
        if symbol in self.listings:
            raise MarketError(f"{symbol} is already listed")
        self._catch_up(now_ms)  # trades before the change belong to the old schedule
        rank = NEW_LISTING_RANK if rank is None else rank
        listing = Listing(symbol, rank, weight(symbol, rank, self.seed), listed_ms=now_ms)
        self.listings[symbol] = listing
        self._reschedule(now_ms)
        return listing

    def set_status(self, symbol: str, status: str, now_ms: int) -> None:
        if status not in STATUSES:
            raise MarketError(f"status {status!r}: use one of {', '.join(STATUSES)}")
        listing = self._listing(symbol)
        self._catch_up(now_ms)
        listing.status = status
        self._reschedule(now_ms)

    def delist(self, symbol: str, now_ms: int) -> None:
        self._listing(symbol)
        self._catch_up(now_ms)
        del self.listings[symbol]
        self.symbols.made.pop(symbol, None)
        self._reschedule(now_ms)

    def set_total_rate(self, total_rate: float | None, now_ms: int) -> None:
        self._catch_up(now_ms)
        self.total_rate = total_rate
        self._reschedule(now_ms)

    def set_rate(self, rate_per_s: float, now_ms: int) -> None:
        """Every trading symbol at ``rate_per_s`` (leaves the total-rate mode)."""
        self._catch_up(now_ms)
        self.rate_per_s, self.total_rate = rate_per_s, None
        self._reschedule(now_ms)

    def _listing(self, symbol: str) -> Listing:
        listing = self.listings.get(symbol)
        if listing is None:
            raise MarketError(f"{symbol} is not listed")
        return listing

    def status(self, symbol: str) -> str:
        return self.listings[symbol].status
