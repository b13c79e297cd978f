"""Which rows of an exchange's klines answer are final, and which open times are
missing: between rows (exchange gaps) or from the store (candles no source stored yet);
the final rows packed for the store."""

from __future__ import annotations

from collections.abc import Sequence

from livecandle.domain.intervals import Interval
from livecandle.exchange.binance.parse import KlineRow, kline_members, member_encoder
from livecandle.store.store import PackedRows

# The last row of an answer reaching "now" is kept only if it closed this long ago
# (guards against clock skew: the exchange may still be filling it).
FORMING_GRACE_MS = 5_000
# walking more missing open times than this at once: fetch from the first
MAX_WALK = 100_000


def closed_rows(page: Sequence[KlineRow], now_ms: int, end_ms: int | None) -> list[KlineRow]:
    """The rows of ``page`` (asked up to ``end_ms``, None: up to now) that are final:
    closed by ``now_ms``, and not the trailing row of an answer that reaches now unless it
    closed well before (a host clock a little ahead of the exchange's takes a row the
    exchange answered as forming for closed). A full page reaches now too when its last
    row is the newest: its length says nothing about that."""
    rows = [r for r in page if r.close_ms < now_ms]
    if (
        (end_ms is None or end_ms >= now_ms)
        and rows
        and rows[-1] is page[-1]
        and rows[-1].close_ms >= now_ms - FORMING_GRACE_MS
    ):
        rows.pop()
    return rows


def find_gaps(
    interval: Interval, prev_open_ms: int | None, rows: Sequence[KlineRow]
) -> list[tuple[int, int]]:
    """``(first missing open, next present open)`` for each hole between ``prev_open_ms``
    (the newest stored candle, if any) and the rows, and between consecutive rows."""
    if _consecutive(interval, prev_open_ms, rows):
        return []
    gaps = []
    for r in rows:
        if prev_open_ms is not None:
            expected_ms = interval.next_open(prev_open_ms)
            if r.open_ms > expected_ms:
                gaps.append((expected_ms, r.open_ms))
        prev_open_ms = r.open_ms
    return gaps


def _consecutive(interval: Interval, prev_open_ms: int | None, rows: Sequence[KlineRow]) -> bool:
    """The rows open one after another on the interval's grid, the first one not after
    the candle following ``prev_open_ms``: no gap (a history page, without a call per
    row)."""
    length_ms = interval.length_ms
    if not rows or not length_ms:
        return False
    first_ms = rows[0].open_ms
    if not interval.is_aligned(first_ms):
        return False
    if prev_open_ms is not None and first_ms > interval.next_open(prev_open_ms):
        return False
    end_ms = first_ms + len(rows) * length_ms
    return [r.open_ms for r in rows] == list(range(first_ms, end_ms, length_ms))


def packed_rows(rows: list[KlineRow]) -> PackedRows:
    """``rows`` as the store takes them, their members ``kline_member``'s bytes: one
    encode of all their open times and one of all the rows, no object per row."""
    opens = member_encoder.encode([r.open_ms for r in rows])[1:-1].replace(b",", b" ")
    return PackedRows(len(rows), opens, kline_members(rows))


def opens_between(interval: Interval, after_ms: int, until_ms: int) -> int:
    """How many open times lie in ``(after_ms, until_ms]``."""
    first = interval.next_open(interval.open_of(after_ms))
    if first > until_ms:
        return 0
    if interval.length_ms:
        return (interval.open_of(until_ms) - first) // interval.length_ms + 1
    n, o = 0, first
    while o <= until_ms:  # the calendar month: a few hundred at most
        n, o = n + 1, interval.next_open(o)
    return n


def first_missing(
    interval: Interval,
    after_ms: int,
    until_ms: int,
    present: Sequence[int],
    gaps: Sequence[tuple[int, int]],
) -> int | None:
    """The first open time in ``(after_ms, until_ms]`` that is neither stored
    (``present``) nor inside a recorded exchange gap ``[first, next)``; None if none."""
    have = set(present)
    o = interval.next_open(interval.open_of(after_ms))
    for _ in range(MAX_WALK):
        if o > until_ms:
            return None
        if o not in have and not any(first <= o < nxt for first, nxt in gaps):
            return o
        o = interval.next_open(o)
    return o
