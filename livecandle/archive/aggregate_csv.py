"""``livecandle aggregate``: data.binance.vision aggTrades CSV in, klines CSV out.

Output: the 12-column klines format of data.binance.vision, in the time unit of the
input's first row. Streaming (blocks of a few MB, see ``trade_csv``), constant memory,
exact. Files of 32 MB and more are cut at line boundaries into one part per CPU,
aggregated at once and stitched. A broken row stops the run with an error naming the
line; with ``--output`` nothing is left behind (the file appears only when complete).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import IO

from livecandle.archive.trade_csv import (
    BLOCK_BYTES,
    CandleAccumulator,
    CsvError,
    Readable,
    accumulate,
    scan,
)
from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.domain.model import Candle, format_quote, format_units
from livecandle.domain.ohlcv import Ohlcv

__all__ = ["CsvError", "aggregate_file", "aggregate_to_path", "candles_parallel"]


class _Slice:
    """``f`` from its current position, ending after ``size`` bytes."""

    def __init__(self, f: Readable, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int) -> bytes:
        data = self.f.read(min(n, self.left))
        self.left -= len(data)
        return data


@dataclass
class _Part:
    candles: list[Candle]
    lines: int
    first_ts: int | None
    last_ts: int | None
    micro: bool | None
    error: CsvError | None = None


def _aggregate_part(path: str, start: int, end: int, interval: str) -> _Part:
    """One process's share of the file: bytes ``[start, end)``, whole lines."""
    acc = CandleAccumulator(INTERVALS[interval])
    candles: list[Candle] = []
    try:
        with open(path, "rb") as f:
            f.seek(start)
            for out in scan(
                _Slice(f, end - start),
                acc,
                BLOCK_BYTES,
                header_allowed=start == 0,
            ):
                candles.extend(out)
        acc.finish(candles)
    except CsvError as e:
        return _Part([], 0, None, None, acc.micro, e)
    return _Part(candles, acc.lines, acc.first_ts, acc.last_ts, acc.micro)


def _split_points(path: str, parts: int) -> list[int]:
    size = os.path.getsize(path)
    points = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(size * k // parts)
            f.readline()  # to the start of the next line
            pos = f.tell()
            if points[-1] < pos < size:
                points.append(pos)
    points.append(size)
    return points


def _merge(a: Candle, b: Candle) -> Candle:
    """One candle that two processes each saw part of (``a`` first)."""
    both = Ohlcv.of_candle(a)
    both.merge(Ohlcv.of_candle(b))
    return both.to_candle(a.open_ms, a.close_ms)


def candles_parallel(path: str, interval: Interval, workers: int) -> tuple[list[Candle], bool]:
    """The file cut at line boundaries into ``workers`` parts aggregated at once, then
    stitched: a candle cut in two is merged, empty candles between parts filled in.
    Returns the candles and whether the file's times are in µs (its first row's)."""
    points = _split_points(path, workers)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=len(points) - 1, mp_context=ctx) as pool:
        parts = list(
            pool.map(
                _aggregate_part,
                [path] * (len(points) - 1),
                points[:-1],
                points[1:],
                [interval.name] * (len(points) - 1),
            )
        )
    result: list[Candle] = []
    lines_before = 0
    last_ts: int | None = None
    micro = next((p.micro for p in parts if p.micro is not None), False)
    for part in parts:
        if part.error is not None:
            raise part.error.shifted(lines_before)
        if part.candles:
            if last_ts is not None and part.first_ts is not None and part.first_ts < last_ts:
                raise CsvError(
                    lines_before + 1,
                    "rows are not in trade order around here "
                    "(a timestamp earlier than the rows before it)",
                )
            first = part.candles[0]
            rest = part.candles[1:]
            if result and result[-1].open_ms == first.open_ms:
                result[-1] = _merge(result[-1], first)
            else:
                if result:
                    c = result[-1].close
                    o = interval.next_open(result[-1].open_ms)
                    while o < first.open_ms:
                        n = interval.next_open(o)
                        result.append(Candle.empty(o, n - 1, c))
                        o = n
                result.append(first)
            result.extend(rest)
            last_ts = part.last_ts
        lines_before += part.lines
    return result, micro


def format_row(c: Candle, micro: bool) -> str:
    """One line of the klines CSV; times in µs when ``micro`` (the archive since 2025)."""
    mult = 1000 if micro else 1
    close = (c.close_ms + 1) * mult - 1
    return (
        f"{c.open_ms * mult},{format_units(c.open)},{format_units(c.high)},"
        f"{format_units(c.low)},{format_units(c.close)},{format_units(c.volume)},{close},"
        f"{format_quote(c.quote_volume)},{c.trades},{format_units(c.taker_buy_volume)},"
        f"{format_quote(c.taker_buy_quote_volume)},0\n"
    )


PARALLEL_MIN_BYTES = 32 << 20


def aggregate_file(path: str, interval: Interval, out: IO[str], workers: int | None = None) -> int:
    """Aggregate ``path`` into ``out`` (a text stream); returns the number of candles.
    Files of 32 MB and more are cut into one part per CPU, aggregated at once."""
    workers = workers or os.cpu_count() or 1
    if workers > 1 and os.path.getsize(path) >= PARALLEL_MIN_BYTES:
        candles, micro = candles_parallel(path, interval, workers)
        for c in candles:
            out.write(format_row(c, micro))
        return len(candles)
    count = 0
    acc = CandleAccumulator(interval)
    with open(path, "rb") as f:
        for c in accumulate(f, acc, BLOCK_BYTES):
            out.write(format_row(c, bool(acc.micro)))
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
