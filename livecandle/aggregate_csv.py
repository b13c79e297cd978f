"""``livecandle aggregate``: data.binance.vision aggTrades CSV in, klines CSV out.

Input rows: ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,timestamp,
is_buyer_maker,is_best_match`` (no header on spot; a header row is skipped), timestamps in
ms or µs (detected per row: 16 digits = µs). Output: the 12-column klines format of
data.binance.vision, in the time unit of the input's first row. Streaming, constant
memory, exact (integer 1e-8 units). Rules as DESIGN.md section 3, including empty
periods between trades (a candle at the previous close with zero volume).

A broken row stops the run with an error naming the line; with ``--output`` nothing is
left behind (the file appears only when complete).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO

from livecandle.intervals import Interval
from livecandle.model import format_quote, format_units, to_units


class CsvError(ValueError):
    """A row that is not a valid aggTrade; the message names the line."""


_TRUE = frozenset((b"True", b"true", b"TRUE", b"1"))
_FALSE = frozenset((b"False", b"false", b"FALSE", b"0"))


def _units(raw: bytes) -> int:
    if len(raw) > 9 and raw[-9] == 46:  # b".": exactly 8 decimals, the archive's form
        digits = raw.replace(b".", b"", 1)
        if digits.isdigit():  # ASCII digits only (int() alone would take "+1", "1_0")
            return int(digits)
    return to_units(raw.decode(errors="replace"))


def klines_from_rows(
    lines: Iterable[bytes], interval: Interval
) -> Iterator[tuple[int, int, int, int, int, int, int, int, int, int, int, bool]]:
    """Pure: aggTrades CSV lines -> closed candles as tuples
    ``(open_ms, close_ms, o, h, l, c, volume, quote, trades, taker_vol, taker_quote, us)``.
    The last candle is emitted at the end of input."""
    open_ms = nxt = -1
    o = h = lo = c = v = q = n = tv = tq = 0
    have = False
    last_close = None
    last_ts = None
    micro = None
    next_open = interval.next_open
    open_of = interval.open_of
    line_no = 0
    for line_no, line in enumerate(lines, 1):
        parts = line.rstrip(b"\r\n").split(b",")
        if len(parts) < 7:
            if not line.strip():
                continue
            raise CsvError(
                f"line {line_no}: expected 8 comma-separated fields, got "
                f"{len(parts)}: {line[:120]!r}"
            )
        try:
            ts = int(parts[5])
            first, last = int(parts[3]), int(parts[4])
            price, qty = _units(parts[1]), _units(parts[2])
        except ValueError as e:
            if line_no == 1 and not parts[0].strip().isdigit():
                continue  # a header row
            raise CsvError(f"line {line_no}: {e}: {line[:120]!r}") from None
        maker_raw = parts[6].strip()
        if maker_raw in _TRUE:
            maker = True
        elif maker_raw in _FALSE:
            maker = False
        else:
            raise CsvError(
                f"line {line_no}: is_buyer_maker must be True or False, got {maker_raw!r}"
            )
        if ts >= 10**15:
            ts //= 1000
            if micro is None:
                micro = True
        elif micro is None:
            micro = False
        if last_ts is not None and ts < last_ts:
            raise CsvError(
                f"line {line_no}: timestamp {ts} is before the previous row's "
                f"{last_ts} (rows must be in trade order)"
            )
        last_ts = ts
        if first < 0 or (price == 0 and qty == 0):
            continue  # invalid aggTrade (Binance's 2022 audit placeholders)
        if ts >= nxt:
            if have:
                yield (open_ms, nxt - 1, o, h, lo, c, v, q, n, tv, tq, bool(micro))
                last_close = c
            if last_close is not None:
                target = open_of(ts)
                gap_open = nxt
                while gap_open < target:
                    gap_next = next_open(gap_open)
                    yield (
                        gap_open,
                        gap_next - 1,
                        last_close,
                        last_close,
                        last_close,
                        last_close,
                        0,
                        0,
                        0,
                        0,
                        0,
                        bool(micro),
                    )
                    gap_open = gap_next
            open_ms = open_of(ts)
            nxt = next_open(open_ms)
            pq = price * qty
            o = h = lo = c = price
            v, q, n = qty, pq, last - first + 1
            tv, tq = (0, 0) if maker else (qty, pq)
            have = True
            continue
        pq = price * qty
        if price > h:
            h = price
        elif price < lo:
            lo = price
        c = price
        v += qty
        q += pq
        n += last - first + 1
        if not maker:
            tv += qty
            tq += pq
    if have:
        yield (open_ms, nxt - 1, o, h, lo, c, v, q, n, tv, tq, bool(micro))


def format_row(k: tuple[int, int, int, int, int, int, int, int, int, int, int, bool]) -> str:
    mult = 1000 if k[11] else 1
    close = (k[1] + 1) * mult - 1
    return (
        f"{k[0] * mult},{format_units(k[2])},{format_units(k[3])},{format_units(k[4])},"
        f"{format_units(k[5])},{format_units(k[6])},{close},{format_quote(k[7])},{k[8]},"
        f"{format_units(k[9])},{format_quote(k[10])},0\n"
    )


def aggregate_file(path: str, interval: Interval, out: IO[str]) -> int:
    """Aggregate ``path`` into ``out`` (a text stream); returns the number of candles."""
    count = 0
    with open(path, "rb") as f:
        for k in klines_from_rows(f, interval):
            out.write(format_row(k))
            count += 1
    return count


def aggregate_to_path(path: str, interval: Interval, output: str) -> int:
    """Like ``aggregate_file`` but atomic: ``output`` appears only when complete."""
    tmp = f"{output}.partial"
    try:
        with open(tmp, "w", newline="") as out:
            count = aggregate_file(path, interval, out)
        os.replace(tmp, output)
        return count
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
