"""Binance's ``/api/v3/klines`` paging over the emulator's market (its own semantics,
independent of the service's reading of them)."""

from __future__ import annotations

from livecandle.domain.intervals import Interval
from livecandle.emulator.kline_table import KlineTable, kline_table, opens_back, opens_from
from livecandle.emulator.market import SymbolMarket

EXTRA = 64  # rows asked beyond the limit: outages have no rows


def klines(
    sm: SymbolMarket,
    interval: Interval,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> KlineTable:
    """Binance semantics: open time in ``[start, end]``; with a start the oldest
    ``limit`` rows from it, otherwise the newest ``limit`` up to ``end`` (or now)."""
    first = sm.first_open(interval)
    last = interval.open_of(min(sm.revealed_ms, end_ms if end_ms is not None else 2**62))
    if start_ms is not None:
        o = max(first, interval.open_of(start_ms))
        if o < start_ms:
            o = interval.next_open(o)
        pages: list[KlineTable] = []
        got = 0
        while o <= last and got < limit:  # a page at a time: outages have no rows
            opens = opens_from(interval, o, last, limit - got + EXTRA)
            o = interval.next_open(int(opens[-1]))
            pages.append(kline_table(sm, interval, opens))
            got += len(pages[-1])
        return KlineTable.concat(pages)[:limit] if pages else KlineTable.empty()
    opens = opens_back(interval, last, first, limit + EXTRA)
    return kline_table(sm, interval, opens)[-limit:]
