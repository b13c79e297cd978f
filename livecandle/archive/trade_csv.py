"""Reading data.binance.vision aggTrades CSV into candles, exactly.

Input rows: ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,timestamp,
is_buyer_maker,is_best_match`` (no header on spot; a header row is skipped), timestamps in
ms or µs (detected per row: 16 digits = µs). Rules as DESIGN.md section 3, including
empty periods between trades (a candle at the previous close, zero volume).

Speed: a block whose rows all have Binance's regular shape is parsed column-wise with
numpy (int64 digits, exact; price x quantity summed from 21-bit limbs so nothing
overflows) and aggregated per candle with ``reduceat`` (no Python work per row); any other
block (a header, an irregular or broken row) goes through the row-by-row parser, which
also names the line of an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from livecandle.archive.accumulator import CandleAccumulator, CsvError, _check_time
from livecandle.archive.columns import _columns_np
from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle, to_units

__all__ = [
    "BLOCK_BYTES",
    "CandleAccumulator",
    "CsvError",
    "Readable",
    "accumulate",
    "candles_from_file",
    "candles_from_rows",
    "scan",
]

BLOCK_BYTES = 1 << 22


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


_TRUE = frozenset((b"True", b"true", b"TRUE", b"1"))
_FALSE = frozenset((b"False", b"false", b"FALSE", b"0"))


def _units(raw: bytes) -> int:
    if len(raw) > 9 and raw[-9] == 46:  # b".": exactly 8 decimals, the archive's form
        digits = raw.replace(b".", b"", 1)
        if digits.isdigit():  # ASCII digits only (int() alone would take "+1", "1_0")
            return int(digits)
    return to_units(raw.decode(errors="replace"))


def _rows(
    acc: CandleAccumulator, lines: Iterable[bytes], first_line: int, out: list[Candle]
) -> None:
    """Row by row: any shape the archive may have, and errors with their line."""
    for line_no, line in enumerate(lines, first_line):
        parts = line.rstrip(b"\r\n").split(b",")
        if len(parts) < 7:
            if not line.strip():
                continue
            raise CsvError(
                line_no, f"expected 8 comma-separated fields, got {len(parts)}: {line[:120]!r}"
            )
        try:
            ts = int(parts[5])
            first, last = int(parts[3]), int(parts[4])
            price, qty = _units(parts[1]), _units(parts[2])
        except ValueError as e:
            if line_no == 1 and not parts[0].strip().isdigit():
                continue  # a header row
            raise CsvError(line_no, f"{e}: {line[:120]!r}") from None
        maker_raw = parts[6].strip()
        if maker_raw in _TRUE:
            maker = True
        elif maker_raw in _FALSE:
            maker = False
        else:
            raise CsvError(line_no, f"is_buyer_maker must be True or False, got {maker_raw!r}")
        ts = _check_time(acc, ts, line_no)
        if first < 0 or (price == 0 and qty == 0):
            continue  # invalid aggTrade (Binance's 2022 audit placeholders)
        acc.add_row(ts, price, qty, last - first + 1, maker, out)


def scan(
    f: Readable, acc: CandleAccumulator, block_bytes: int, header_allowed: bool
) -> Iterator[list[Candle]]:
    """Read ``f`` block by block into ``acc``; yields the candles closed by each block.
    The line count so far is kept in ``acc.lines``."""
    out: list[Candle] = []
    line_no = 1
    leftover = b""
    first = header_allowed
    while True:
        data = f.read(block_bytes)
        if not data:
            break
        data = leftover + data
        cut = data.rfind(b"\n")
        if cut < 0:
            leftover = data
            continue
        block, leftover = data[:cut], data[cut + 1 :]
        if first:
            first = False
            head, sep, rest = block.partition(b"\n")
            if not head.split(b",", 1)[0].strip().isdigit():  # a header row
                _rows(acc, [head], line_no, out)
                line_no += 1
                if not sep:
                    continue
                block = rest
        rows = _columns_np(acc, block, out)
        if not rows:
            lines = block.split(b"\n")
            _rows(acc, lines, line_no, out)
            rows = len(lines)
        line_no += rows
        yield out
        out = []
    if leftover.strip():
        _rows(acc, [leftover], line_no, out)
        line_no += 1
    acc.lines = line_no - 1
    yield out


def accumulate(
    f: Readable, acc: CandleAccumulator, block_bytes: int = BLOCK_BYTES
) -> Iterator[Candle]:
    """Closed candles from an aggTrades CSV stream into ``acc``, in order; the file's
    time unit (``acc.micro``) is known from the first candle on."""
    for out in scan(f, acc, block_bytes, header_allowed=True):
        yield from out
    last: list[Candle] = []
    acc.finish(last)
    yield from last


def candles_from_file(
    f: Readable, interval: Interval, block_bytes: int = BLOCK_BYTES
) -> Iterator[Candle]:
    """Closed candles of ``interval`` from an aggTrades CSV stream, in order."""
    return accumulate(f, CandleAccumulator(interval), block_bytes)


def candles_from_rows(lines: Iterable[bytes], interval: Interval) -> Iterator[Candle]:
    """The row-by-row path alone (the reference the fast path is tested against)."""
    acc = CandleAccumulator(interval)
    out: list[Candle] = []
    _rows(acc, lines, 1, out)
    acc.finish(out)
    yield from out
