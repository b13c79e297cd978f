"""The emulator's synthetic order book of one symbol, kept consistent with its trades.

Price levels lie on a per-symbol grid (``step``, about a basis point of the price, a
multiple of the 0.01 tick). Each re-centre on a trade price ``p`` consumes every bid at or
above ``p`` and every ask at or below it, replenishes the levels between the book and
``p``, and keeps ``levels`` per side (the far tail trimmed or refilled): bids < ``p`` <
asks always, so the spread straddles the last trade. ``noise`` changes a few quantities
near the top (and sometimes takes out a level) the way quotes flicker between trades.

Every level change takes the next update id (Binance's ``lastUpdateId`` sequence) and is
journalled with the quantity it replaced, so the book as it stood at any recent update id
can be rebuilt (``at``) and the net change over a range of ids told (``changes``): a diff
event is exactly that, with absolute quantities, 0 removing a level.
"""

from __future__ import annotations

import random
from collections import deque

from livecandle.emulator.market import STEP, TICK
from livecandle.emulator.tape import _mix64

Levels = dict[int, int]  # price units -> quantity units (1e-8)
# one change: (update id, is bid, price, quantity before, quantity after)
Change = tuple[int, bool, int, int, int]

_QTY_STEPS = 200_000  # a level holds 0.00001 .. 2.00000


class BookGone(LookupError):
    """The update id asked for is older than the journal holds (or not reached yet)."""


def grid_step(base_price: float) -> int:
    """About one basis point of the price, at least one tick, a whole number of ticks."""
    return max(1, round(base_price * 1e-4 * 100)) * TICK


def straddle(price: int, step: int) -> tuple[int, int]:
    """The grid's best bid (highest below ``price``) and best ask (lowest above it)."""
    return (price - 1) // step * step, price // step * step + step


def fresh_qty(key: int, price: int) -> int:
    """A new level's quantity: a pure function of the symbol and the price (a book made
    now and a book-less best-price answer agree)."""
    return (1 + _mix64(key ^ price) % _QTY_STEPS) * STEP


class SyntheticBook:
    def __init__(
        self, key: int, step: int, levels: int, first_update_id: int, journal: int = 4096
    ) -> None:
        self.key = key
        self.step = step
        self.levels = levels
        self.bids: Levels = {}
        self.asks: Levels = {}
        self.update_id = first_update_id - 1  # the id of the last change
        self.journal: deque[Change] = deque(maxlen=journal)
        self.best_bid = self.worst_bid = 0  # meaningful while bids is not empty
        self.best_ask = self.worst_ask = 0
        self._rng = random.Random(key)

    # -- changes ------------------------------------------------------------------------

    def _set(self, is_bid: bool, price: int, qty: int) -> None:
        side = self.bids if is_bid else self.asks
        old = side.get(price, 0)
        if old == qty:
            return
        if qty:
            side[price] = qty
        else:
            del side[price]
        self.update_id += 1
        self.journal.append((self.update_id, is_bid, price, old, qty))

    def recentre(self, price: int) -> None:
        """The book around a trade at ``price``: the crossed levels consumed, the gap
        to the trade replenished, ``levels`` kept per side."""
        bb, ba = straddle(price, self.step)
        self._recentre_side(True, bb)
        self._recentre_side(False, ba)

    def _recentre_side(self, is_bid: bool, best: int) -> None:
        side = self.bids if is_bid else self.asks
        step = self.step
        worse = -step if is_bid else step  # from the best towards the far end
        top, bottom = (self.best_bid, self.worst_bid) if is_bid else (self.best_ask, self.worst_ask)
        if side and abs(top - best) // step > self.levels:  # moved past the whole side
            for p in list(side):
                self._set(is_bid, p, 0)
        if side:
            # consumed: the levels on the trade's side of ``best``
            p = top
            while (p > best) if is_bid else (p < best):
                if p in side:
                    self._set(is_bid, p, 0)
                p += worse
            if (bottom > best) if is_bid else (bottom < best):
                bottom = best  # the whole side was consumed
        if not side:
            self._set(is_bid, best, fresh_qty(self.key, best))
            bottom = best
        # replenished: from the trade down to the first level left
        p = best
        while p not in side:
            self._set(is_bid, p, fresh_qty(self.key, p))
            p += worse
        # trimmed or refilled at the far end
        while len(side) > self.levels:
            if bottom in side:
                self._set(is_bid, bottom, 0)
            bottom -= worse
        while bottom not in side:
            bottom -= worse
        while len(side) < self.levels and bottom + worse > 0:
            bottom += worse
            if bottom not in side:
                self._set(is_bid, bottom, fresh_qty(self.key, bottom))
        if is_bid:
            self.best_bid, self.worst_bid = best, bottom
        else:
            self.best_ask, self.worst_ask = best, bottom

    def noise(self, changes: int = 2, near: int = 20, take_out: float = 0.2) -> None:
        """Quotes flicker: ``changes`` quantities near the top set anew (a hole filled),
        sometimes one level inside the book taken out. Best and worst levels stay put, so
        the spread keeps straddling the last trade."""
        rng = self._rng
        for _ in range(changes):
            is_bid = rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            if len(side) < 3:
                continue
            k = rng.randrange(1, near)
            p = self.best_bid - k * self.step if is_bid else self.best_ask + k * self.step
            if (p > self.worst_bid) if is_bid else (p < self.worst_ask):
                self._set(is_bid, p, (1 + rng.randrange(_QTY_STEPS)) * STEP)
        if rng.random() < take_out:
            is_bid = rng.random() < 0.5
            k = rng.randrange(1, 50)
            p = self.best_bid - k * self.step if is_bid else self.best_ask + k * self.step
            if p not in (self.worst_bid, self.worst_ask):
                self._set(is_bid, p, 0)

    # -- views --------------------------------------------------------------------------

    def top(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``limit`` levels per side: bids descending, asks ascending."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return bids, asks

    def changes(self, after_id: int) -> tuple[int, Levels, Levels]:
        """The net change of every level since ``after_id``: (first id, bids, asks),
        absolute quantities, 0 for a level gone. Raises BookGone when the journal no
        longer reaches back there."""
        bids: Levels = {}
        asks: Levels = {}
        first = after_id + 1
        if self.journal and self.journal[0][0] > first:
            raise BookGone(f"changes after {after_id} are no longer journalled")
        for uid, is_bid, price, _, new in reversed(self.journal):
            if uid <= after_id:
                break
            (bids if is_bid else asks).setdefault(price, new)  # the newest wins
        return first, bids, asks

    def at(self, update_id: int) -> tuple[Levels, Levels]:
        """The book as it stood when ``update_id`` was the last change."""
        if update_id > self.update_id:
            raise BookGone(f"update id {update_id} is not reached yet ({self.update_id})")
        if update_id < self.update_id and (not self.journal or self.journal[0][0] > update_id + 1):
            raise BookGone(f"update id {update_id} is no longer journalled")
        bids, asks = dict(self.bids), dict(self.asks)
        for uid, is_bid, price, old, _ in reversed(self.journal):
            if uid <= update_id:
                break
            side = bids if is_bid else asks
            if old:
                side[price] = old
            else:
                side.pop(price, None)
        return bids, asks
