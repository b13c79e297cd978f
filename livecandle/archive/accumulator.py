"""CandleAccumulator: closed candles of one interval from aggTrades in time order, and
the error a bad archive row raises. Pure: no I/O; both parsers (row by row and column-wise)
feed it."""

from __future__ import annotations

from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle
from livecandle.domain.ohlcv import Ohlcv


class CsvError(ValueError):
    """A row that is not a valid aggTrade; the message names the line."""

    def __init__(self, line: int, detail: str) -> None:
        super().__init__(line, detail)  # picklable: crosses process boundaries
        self.line, self.detail = line, detail

    def __str__(self) -> str:
        return f"line {self.line}: {self.detail}"

    def shifted(self, lines: int) -> CsvError:
        """The same error in a file where this part starts ``lines`` lines later."""
        return CsvError(self.line + lines, self.detail)


class CandleAccumulator:
    """Pure: trades in time order -> closed candles of one interval. Times are in ms
    whatever the file's unit; ``micro`` says whether the file's was µs."""

    def __init__(self, interval: Interval) -> None:
        self.interval = interval
        self.open_ms = -1
        self.next_ms = -1
        self.acc: Ohlcv | None = None  # the trades so far of the candle at open_ms
        self.last_close: int | None = None
        self.last_ts: int | None = None
        self.micro: bool | None = None
        self.lines = 0
        self.first_ts: int | None = None  # of the first row (for stitching parts)

    def _close_until(self, ts: int, out: list[Candle]) -> None:
        """Close the current candle and the empty ones before the candle of ``ts``."""
        self.finish(out)
        target = self.interval.open_of(ts)
        if self.last_close is not None and self.next_ms >= 0:
            o = self.next_ms
            c = self.last_close
            while o < target:
                n = self.interval.next_open(o)
                out.append(Candle.empty(o, n - 1, c))
                o = n
        self.open_ms = target
        self.next_ms = self.interval.next_open(target)

    def add_row(
        self, ts: int, price: int, qty: int, count: int, maker: bool, out: list[Candle]
    ) -> None:
        if ts >= self.next_ms:
            self._close_until(ts, out)
        a = self.acc
        if a is None:
            self.acc = Ohlcv.of_trade(price, qty, count, maker)
        else:
            a.add_trade(price, qty, count, maker)

    def add_part(self, ts: int, part: Ohlcv, out: list[Candle]) -> None:
        """The aggregate of consecutive trades of one candle, the first at ``ts``."""
        if ts >= self.next_ms:
            self._close_until(ts, out)
        a = self.acc
        if a is None:
            self.acc = part
        else:
            a.merge(part)

    def finish(self, out: list[Candle]) -> None:
        """Close the current candle (at the end of the input, or of its period)."""
        if self.acc is not None:
            a = self.acc
            out.append(a.to_candle(self.open_ms, self.next_ms - 1))
            self.last_close = a.close
            self.acc = None


def _check_time(acc: CandleAccumulator, ts: int, line_no: int) -> int:
    if ts >= 10**15:
        ts //= 1000
        if acc.micro is None:
            acc.micro = True
    elif acc.micro is None:
        acc.micro = False
    if acc.last_ts is not None and ts < acc.last_ts:
        raise CsvError(
            line_no,
            f"timestamp {ts} is before the previous row's {acc.last_ts} "
            "(rows must be in trade order)",
        )
    if acc.first_ts is None:
        acc.first_ts = ts
    acc.last_ts = ts
    return ts
