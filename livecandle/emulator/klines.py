"""Binance's ``/api/v3/klines`` paging over the emulator's market (its own semantics,
independent of the service's reading of them)."""

from __future__ import annotations

from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle
from livecandle.emulator.market import SymbolMarket


def klines(
    sm: SymbolMarket,
    interval: Interval,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[Candle]:
    """Binance semantics: open time in ``[start, end]``; with a start the oldest
    ``limit`` rows from it, otherwise the newest ``limit`` up to ``end`` (or now)."""
    first = sm.first_open(interval)
    last = interval.open_of(min(sm.revealed_ms, end_ms if end_ms is not None else 2**62))
    if start_ms is not None:
        o = max(first, interval.open_of(start_ms))
        if o < start_ms:
            o = interval.next_open(o)
        out: list[Candle] = []
        prev: int | None = None
        while o <= last and len(out) < limit:
            c = sm.candle(interval, o, prev)
            if c is not None:
                out.append(c)
                prev = c.close
            o = interval.next_open(o)
        return out
    opens: list[int] = []
    o = last
    while o >= first and len(opens) < limit + 64:
        opens.append(o)
        o = interval.shift(o, -1)
    opens.reverse()
    rows: list[Candle] = []
    prev = None
    for o in opens:
        c = sm.candle(interval, o, prev)
        if c is not None:
            rows.append(c)
            prev = c.close
    return rows[-limit:]
