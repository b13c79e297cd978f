"""Binance's ``/api/v3/klines`` paging over the emulator's market (its own semantics,
independent of the service's reading of them)."""

from __future__ import annotations

from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle
from livecandle.emulator.market import SymbolMarket

EXTRA = 64  # rows asked beyond the limit: outages have no rows


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
    opens: list[int] = []
    if start_ms is not None:
        o = max(first, interval.open_of(start_ms))
        if o < start_ms:
            o = interval.next_open(o)
        out: list[Candle] = []
        while o <= last and len(out) < limit:  # a page at a time: outages have no rows
            opens = []
            while o <= last and len(opens) < limit - len(out) + EXTRA:
                opens.append(o)
                o = interval.next_open(o)
            out += sm.candles(interval, opens)
        return out[:limit]
    o = last
    while o >= first and len(opens) < limit + EXTRA:
        opens.append(o)
        o = interval.shift(o, -1)
    opens.reverse()
    return sm.candles(interval, opens)[-limit:]
