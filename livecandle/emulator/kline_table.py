"""A run of klines as numpy columns, computed from the market without an object per row.

A 1,000-row ``/api/v3/klines`` answer made a ``Candle`` per row and formatted it value by
value: about 12 ms of the emulator's CPU, and the whole market's backfill asks for
thousands. Here the rows before the emulator started come from one reduction over the
history's chunks (``SymbolMarket.history_reduce``), an empty row takes the previous
close by a forward fill, and ``wire.klines_body`` formats every row at once. Only rows
reaching past the start (live trades, few) are computed one by one. The rows are those
the per-row definition gives (a test pins it): none before the listing, after now, or
without trades inside an exchange outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livecandle.domain.intervals import Interval
from livecandle.domain.model import SCALE
from livecandle.emulator.history import I64, STEP_UNITS, TICK_UNITS
from livecandle.emulator.market import SymbolMarket
from livecandle.emulator.tape import Agg, quote8

# the columns of a table's rows matrix; quotes in 1e-8 units, rounded half to even
COLUMNS = (
    "open_ms",
    "close_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote",
    "trades",
    "taker_volume",
    "taker_quote",
)
# one tick x one step of history notional in 1e-8 quote units: exact, so no rounding
assert TICK_UNITS * STEP_UNITS % SCALE == 0
QUOTE8 = TICK_UNITS * STEP_UNITS // SCALE


@dataclass(frozen=True, slots=True)
class KlineTable:
    """Klines as an ``(11, n)`` int64 matrix, one row of it per column of ``COLUMNS``."""

    rows: I64

    @classmethod
    def empty(cls) -> KlineTable:
        return cls(np.zeros((len(COLUMNS), 0), np.int64))

    @classmethod
    def concat(cls, tables: Sequence[KlineTable]) -> KlineTable:
        if len(tables) == 1:
            return tables[0]
        return cls(np.concatenate([t.rows for t in tables], axis=1))

    def __len__(self) -> int:
        return int(self.rows.shape[1])

    def __getitem__(self, s: slice) -> KlineTable:
        return KlineTable(self.rows[:, s])

    def row(self, i: int) -> list[int]:
        out: list[int] = self.rows[:, i].tolist()
        return out

    def set_row(self, i: int, values: list[int]) -> None:
        self.rows[:, i] = values


def agg_row(open_ms: int, close_ms: int, agg: Agg) -> list[int]:
    """A table row of an aggregate (``tape.Agg``)."""
    o, h, low, c, v, q, n, tv, tq = agg[:9]
    return [open_ms, close_ms, o, h, low, c, v, quote8(q), n, tv, quote8(tq)]


def opens_from(interval: Interval, o: int, last: int, count: int) -> I64:
    """Up to ``count`` consecutive opens from ``o`` (aligned), none after ``last``."""
    if interval.length_ms:
        n = max(0, min(count, (last - o) // interval.length_ms + 1))
        return o + interval.length_ms * np.arange(n, dtype=np.int64)
    out: list[int] = []
    while o <= last and len(out) < count:
        out.append(o)
        o = interval.next_open(o)
    return np.array(out, np.int64)


def opens_back(interval: Interval, last: int, first: int, count: int) -> I64:
    """The last ``count`` consecutive opens up to ``last`` (aligned), none before
    ``first``, ascending."""
    if interval.length_ms:
        n = max(0, min(count, (last - first) // interval.length_ms + 1))
        return last - interval.length_ms * np.arange(n - 1, -1, -1, dtype=np.int64)
    out: list[int] = []
    o = last
    while o >= first and len(out) < count:
        out.append(o)
        o = interval.shift(o, -1)
    out.reverse()
    return np.array(out, np.int64)


def kline_table(sm: SymbolMarket, interval: Interval, opens: I64) -> KlineTable:
    """The klines opening at ``opens`` (consecutive, ascending) as the exchange shows
    them now; none before the listing, after now, or inside an outage."""
    if interval.length_ms:
        nexts = opens + interval.length_ms
    else:
        nexts = np.array([interval.next_open(o) for o in opens.tolist()], np.int64)
    # ascending: the rows after the listing and not after now are one slice
    a = int(np.searchsorted(nexts, sm.listing_ms, "right"))
    b = int(np.searchsorted(opens, sm.revealed_ms, "right"))
    opens, nexts = opens[a:b], nexts[a:b]
    n = len(opens)
    if not n:
        return KlineTable.empty()
    live = sm.live_start_ms
    m = np.zeros((len(COLUMNS), n), np.int64)
    m[0] = opens
    m[1] = nexts - 1
    has = np.zeros(n, np.bool_)
    if opens[0] < live:
        bounds = np.minimum(np.append(opens, nexts[-1]), live)
        seg, r = sm.history_reduce(bounds)
        has[seg] = True
        m[2:6, seg] = r[0:4] * TICK_UNITS
        m[6, seg] = r[4] * STEP_UNITS
        m[7, seg] = r[5] * QUOTE8
        m[8, seg] = r[6]
        m[9, seg] = r[7] * STEP_UNITS
        m[10, seg] = r[8] * QUOTE8
    # rows reaching past the start: history and live trades, one by one (a few)
    for i in range(int(np.searchsorted(nexts, live, "right")), n):
        o, nxt = int(opens[i]), int(nexts[i])
        agg = sm.range_agg(o, nxt)
        has[i] = agg is not None
        m[:, i] = agg_row(o, nxt - 1, agg) if agg is not None else [o, nxt - 1] + [0] * 9
    if has.all():
        return KlineTable(m)
    keep = has.copy()
    empty = ~has
    if sm.outages_ms:
        inside = np.zeros(n, np.bool_)
        for o0, o1 in sm.outages_ms:
            inside |= (opens >= o0) & (nexts <= o1)
        keep |= ~inside  # an empty row inside an outage is not shown
    else:
        keep[:] = True
    # an empty row shows the previous shown row's close (all four prices)
    last = np.maximum.accumulate(np.where(has, np.arange(n), -1))
    price = m[5][np.maximum(last, 0)]
    lead = empty & keep & (last < 0)
    if lead.any():  # before the range's first trade: the market's price before it
        price[lead] = sm.price_before(int(opens[int(np.argmax(lead))]))
    fill = empty & keep
    for k in (2, 3, 4, 5):
        m[k, fill] = price[fill]
    return KlineTable(m[:, keep])
