"""TradeSequencer: aggregate trades of one symbol in id order, each exactly once.

Binance's aggTrade ids are contiguous per symbol. A duplicate (id already seen: a
reconnect or rotation overlap) is dropped; a jump means trades were missed, so the
sequencer holds every later trade until the missing range has been fetched (REST
``/api/v3/aggTrades?fromId=``) and handed back with ``resolve``. Pure: no I/O.

Held trades are bounded: at most ``max_held`` per symbol, and at most ``TradePool.cap``
across every symbol sharing one pool (1,600 symbols with a hole each must not hold
200,000 trades each). A trade that would pass either bound is refused (``Offer.FULL``,
not held): the caller then abandons the hole and offers it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from livecandle.domain.model import Trade


class Offer(Enum):
    NEXT = "next"  # deliver now
    DUPLICATE = "duplicate"  # drop
    HELD = "held"  # a gap is being filled: kept for later
    GAP = "gap"  # trades are missing: fetch ``gap`` and call resolve()
    FULL = "full"  # held trades reached a bound: abandon the hole, then offer it again


MAX_HELD = 50_000  # trades held behind a hole, per symbol
MAX_HELD_TOTAL = 400_000  # the same, across every symbol of a process


class TradePool:
    """A count of trades buffered across symbols, with a cap (shared by sequencers)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0

    @property
    def full(self) -> bool:
        return self.total >= self.cap


@dataclass(frozen=True, slots=True)
class Gap:
    first_id: int
    last_id: int

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


class TradeSequencer:
    def __init__(self, max_held: int = MAX_HELD, pool: TradePool | None = None) -> None:
        self.max_held = max_held
        self.pool = pool if pool is not None else TradePool(max_held)
        self.last_id: int | None = None
        self.gap: Gap | None = None
        self.held: list[Trade] = []
        self.duplicates = 0
        self.gaps = 0
        self.recovered = 0
        self.abandoned = 0

    def offer(self, trade: Trade) -> Offer:
        a = trade.agg_id
        if self.gap is not None:
            # already delivered (an overlap, a late answer to a look): not held, so that
            # an abandoned hole never delivers it again
            if self.last_id is not None and a <= self.last_id:
                self.duplicates += 1
                return Offer.DUPLICATE
            if len(self.held) >= self.max_held or self.pool.full:
                return Offer.FULL
            self.held.append(trade)
            self.pool.total += 1
            return Offer.HELD
        last = self.last_id
        if last is None or a == last + 1:
            self.last_id = a
            return Offer.NEXT
        if a <= last:
            self.duplicates += 1
            return Offer.DUPLICATE
        self.gap = Gap(last + 1, a - 1)
        self.gaps += 1
        self._set_held([trade])
        return Offer.GAP

    def _set_held(self, held: list[Trade]) -> None:
        self.pool.total += len(held) - len(self.held)
        self.held = held

    def release(self) -> None:
        """Forget the held trades (the symbol is no longer followed)."""
        self._set_held([])
        self.gap = None

    def resolve(self, fetched: list[Trade]) -> list[Trade]:
        """Hand in trades fetched for the gap (any superset is fine); returns every trade
        now deliverable, in order. If a hole remains (a short fetch, or another gap among
        the held trades), ``gap`` is set again and the rest stays held."""
        if self.gap is None:
            return []
        fast = self._resolve_before_held(fetched)
        if fast is not None:
            return fast
        pool: dict[int, Trade] = {}
        for t in fetched:
            pool.setdefault(t.agg_id, t)
        for t in self.held:
            pool.setdefault(t.agg_id, t)
        last = self.last_id
        assert last is not None
        out: list[Trade] = []
        held_ids = {t.agg_id for t in self.held}
        for a in sorted(pool):
            if a <= last:
                self.duplicates += 1
                continue
            if a != last + 1:
                break
            t = pool.pop(a)
            out.append(t)
            if a not in held_ids:
                self.recovered += 1
            last = a
        self.last_id = last
        rest = sorted((t for a, t in pool.items() if a > last), key=lambda t: t.agg_id)
        if rest:
            self.gap = Gap(last + 1, rest[0].agg_id - 1)
            self._set_held(rest)
        else:
            self.gap = None
            self._set_held([])
        return out

    def _resolve_before_held(self, fetched: list[Trade]) -> list[Trade] | None:
        """A page that ends short of the gap's end (a large hole fetched page by page):
        its run from ``last_id`` on is delivered without looking at the held trades, so a
        page costs its own length, not the held trades' (up to ``max_held``). None when
        the page is not in id order or reaches the held trades: the whole merge then."""
        last = self.last_id
        assert last is not None and self.gap is not None
        if not fetched or fetched[-1].agg_id >= self.gap.last_id:
            return None
        out: list[Trade] = []
        prev = None
        for t in fetched:
            a = t.agg_id
            if prev is not None and a <= prev:
                return None
            prev = a
            if a <= last:
                self.duplicates += 1
            elif a == last + 1:
                out.append(t)
                last = a
            else:
                return None  # a hole within the page: the whole merge holds the rest
        self.recovered += len(out)
        self.last_id = last
        self.gap = Gap(last + 1, self.gap.last_id)
        return out

    def abandon(self) -> list[Trade]:
        """Give up on the current gap (too large to fetch): continue from the held
        trades. The candles of that period are then incomplete."""
        last = self.last_id
        held = sorted(
            (t for t in self.held if last is None or t.agg_id > last), key=lambda t: t.agg_id
        )
        self.abandoned += 1
        self.gap = None
        self._set_held([])
        if held:  # on from the first held trade (never back: those are delivered)
            self.last_id = held[0].agg_id - 1
        return [t for t in held if self.offer(t) is Offer.NEXT]
