"""LiveCandleBuilder: the forming candle of every interval of one symbol, from its trades.

Pure: no I/O, time comes from the trades and from an injected clock. Exact: amounts are
1e-8 integer units, quote amounts 1e-16. Binance's rules (DESIGN.md section 3): open =
first price, close = last, high/low = max/min, volume = sum of quantities, quote volume =
sum of price x quantity, taker-buy volumes over trades with ``m == false``, trades = sum
of (l - f + 1); a period without trades is a candle at the previous close with zero volume.
The arithmetic is ``Ohlcv``'s; this module decides which candles a trade goes into and
when they close.

Cost per trade does not grow with the number of intervals: trades accumulate in one
*bucket* that ends at the next boundary of any interval; the bucket is folded into the
candles of all intervals only when a boundary passes (or a snapshot is taken).

Late trades: a trade older than the current bucket (it arrives after the clock already
closed its candle) is applied to every candle that contains it: the forming candle of
longer intervals, or the just-closed (still unconfirmed) candle of shorter ones, which is
then reported again as a correction. Trades older than that are counted and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from livecandle.domain.clock import Clock, SystemClock
from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle, Trade
from livecandle.domain.ohlcv import Ohlcv

MAX_EMPTY_CLOSES = 1000  # at most this many empty candles reported after a long silence


def _combined(a: Ohlcv | None, b: Ohlcv | None) -> Ohlcv | None:
    """``a`` then ``b``, without changing either (the result may be one of them)."""
    if a is None:
        return b
    if b is None:
        return a
    both = a.copy()
    both.merge(b)
    return both


@dataclass(frozen=True, slots=True)
class ClosedCandle:
    """A candle that just closed. ``complete``: built from every trade of its period
    (false for the first candle after start-up, unless seeded from a kline snapshot).
    ``correction``: a late trade changed a candle reported closed before."""

    interval: Interval
    candle: Candle
    complete: bool
    correction: bool = False


class LiveCandleBuilder:
    """Forming candles of ``intervals`` for one symbol."""

    def __init__(
        self,
        intervals: Sequence[Interval],
        clock: Clock | None = None,
        close_grace_ms: int = 1_000,
    ) -> None:
        if not intervals:
            raise ValueError("LiveCandleBuilder needs at least one interval")
        self.intervals = tuple(intervals)
        self.clock = clock or SystemClock()
        self.close_grace_ms = close_grace_ms
        n = len(self.intervals)
        self._candles: list[Ohlcv | None] = [None] * n  # folded trades of the forming candle
        self._opens = [0] * n
        self._nexts = [0] * n
        self._complete = [False] * n
        self.all_complete = False  # every forming candle holds all its trades
        self._lost_until_ms = -1  # periods opening at or before it may lack lost trades
        self.previous: list[Candle | None] = [None] * n
        self._previous_complete = [False] * n
        self._bucket: Ohlcv | None = None
        self._floor = 0  # newest boundary passed: trades older than this are late
        # the next boundary of any interval (the soonest close + 1), -1 before the first
        # trade: read by the feed's clock (``advance`` closes nothing before it)
        self.boundary_ms = -1
        self.last_price: int | None = None
        self.last_time_ms: int | None = None
        self.late_trades = 0
        self.stale_trades = 0

    # -- trades -------------------------------------------------------------------------

    def add(
        self, time_ms: int, price: int, qty: int, count: int = 1, maker: bool = False
    ) -> list[ClosedCandle] | None:
        """One (aggregate) trade; returns the candles this trade closed, if any."""
        closed = None
        if time_ms >= self.boundary_ms:
            if self.boundary_ms < 0:
                self._start(time_ms)
            else:
                closed = self._roll(time_ms)
        elif time_ms < self._floor:
            return self._late(time_ms, price, qty, count, maker)
        b = self._bucket
        if b is None:
            self._bucket = Ohlcv.of_trade(price, qty, count, maker)
        else:
            # Ohlcv.add_trade inlined: the call alone costs ~10% of this per-trade path
            # (tests/unit/test_ohlcv.py checks that both give the same candle)
            if price > b.high:
                b.high = price
            elif price < b.low:
                b.low = price
            b.close = price
            q = price * qty
            b.volume += qty
            b.quote_volume += q
            b.trades += count
            if not maker:
                b.taker_buy_volume += qty
                b.taker_buy_quote_volume += q
        self.last_price = price
        self.last_time_ms = time_ms
        return closed

    def add_trade(self, t: Trade) -> list[ClosedCandle] | None:
        if not t.is_valid:
            return None
        return self.add(t.time_ms, t.price, t.quantity, t.count, t.buyer_is_maker)

    def add_trades(self, trades: Iterable[Trade]) -> list[ClosedCandle]:
        out: list[ClosedCandle] = []
        for t in trades:
            closed = self.add_trade(t)
            if closed:
                out.extend(closed)
        return out

    def _start(self, time_ms: int) -> None:
        for i, interval in enumerate(self.intervals):
            self._opens[i] = interval.open_of(time_ms)
            self._nexts[i] = interval.next_open(self._opens[i])
        self.boundary_ms = min(self._nexts)
        self._floor = max(self._opens)

    def _fold(self) -> None:
        b = self._bucket
        if b is None:
            return
        candles = self._candles
        for i in range(len(candles)):
            c = candles[i]
            if c is None:
                candles[i] = b.copy()
            else:
                c.merge(b)
        self._bucket = None

    def _roll(self, time_ms: int) -> list[ClosedCandle]:
        """Close every candle whose period ended at or before ``time_ms``."""
        self._fold()
        closed: list[ClosedCandle] = []
        last = self.last_price
        for i, interval in enumerate(self.intervals):
            if self._nexts[i] > time_ms:
                continue
            acc = self._candles[i]
            open_ms, nxt = self._opens[i], self._nexts[i]
            complete = self._complete[i]
            if acc is not None:
                closed.append(ClosedCandle(interval, acc.to_candle(open_ms, nxt - 1), complete))
            elif last is not None:
                closed.append(
                    ClosedCandle(interval, Candle.empty(open_ms, nxt - 1, last), complete)
                )
            # periods after it without any trade: empty candles at the last price
            new_open = interval.open_of(time_ms)
            o = nxt
            if last is not None and o < new_open:
                empties = []
                while o < new_open:
                    n2 = interval.next_open(o)
                    empties.append(
                        ClosedCandle(
                            interval, Candle.empty(o, n2 - 1, last), o > self._lost_until_ms
                        )
                    )
                    o = n2
                    if len(empties) > MAX_EMPTY_CLOSES:
                        empties.pop(0)
                closed.extend(empties)
            if closed and closed[-1].interval is interval:
                self.previous[i] = closed[-1].candle
                self._previous_complete[i] = closed[-1].complete
            self._candles[i] = None
            self._opens[i] = new_open
            self._nexts[i] = interval.next_open(new_open)
            self._complete[i] = new_open > self._lost_until_ms
        self.all_complete = all(self._complete)
        self.boundary_ms = min(self._nexts)
        self._floor = max(self._opens)
        return closed

    def _late(
        self, time_ms: int, price: int, qty: int, count: int, maker: bool
    ) -> list[ClosedCandle] | None:
        """A trade from before the newest boundary (its candle was closed by the clock)."""
        self._fold()
        one = Ohlcv.of_trade(price, qty, count, maker)
        corrections: list[ClosedCandle] = []
        applied = missed = False
        for i, interval in enumerate(self.intervals):
            if time_ms >= self._opens[i]:
                c = self._candles[i]
                if c is None:
                    self._candles[i] = one.copy()
                else:
                    c.merge(one)
                applied = True
                continue
            prev = self.previous[i]
            if prev is not None and prev.open_ms <= time_ms <= prev.close_ms:
                acc = _combined(Ohlcv.of_candle(prev) if prev.trades else None, one)
                assert acc is not None
                corrected = acc.to_candle(prev.open_ms, prev.close_ms)
                self.previous[i] = corrected
                corrections.append(
                    ClosedCandle(interval, corrected, self._previous_complete[i], correction=True)
                )
                applied = True
            else:
                missed = True  # older than this interval's previous candle: lost for it
        if missed:
            self.stale_trades += 1  # counted even when a longer interval took it
        if not applied:
            return None
        self.late_trades += 1
        self.last_price = price
        return corrections or None

    # -- time ---------------------------------------------------------------------------

    def advance(self, now_ms: int | None = None) -> list[ClosedCandle]:
        """Close candles whose period ended more than ``close_grace_ms`` ago, trades or
        not (the grace lets in-flight trades of the old period arrive first)."""
        if self.boundary_ms < 0:
            return []
        now = self.clock.now_ms() if now_ms is None else now_ms
        if now - self.close_grace_ms >= self.boundary_ms:
            return self._roll(now - self.close_grace_ms)
        return []

    def roll_to(self, time_ms: int) -> list[ClosedCandle]:
        """Close every candle whose period ends at or before ``time_ms`` now (the
        exchange said so: its final kline arrived and all its trades are in)."""
        if self.boundary_ms < 0 or time_ms < self.boundary_ms:
            return []
        return self._roll(time_ms)

    def mark_incomplete(self, until_ms: int | None = None) -> None:
        """Trades were lost: the forming candles no longer hold every trade, nor does any
        period opening at or before ``until_ms`` (the time of the first trade after the
        loss: the lost ones are somewhere before it), empty or not."""
        self._complete = [False] * len(self.intervals)
        self.all_complete = False
        if until_ms is not None and until_ms > self._lost_until_ms:
            self._lost_until_ms = until_ms

    # -- reading ------------------------------------------------------------------------

    def index(self, interval: Interval) -> int:
        return self.intervals.index(interval)

    def forming(self, i: int) -> Candle | None:
        """The forming candle of interval number ``i`` (trades so far, or an empty
        candle at the last price when its period has none yet)."""
        if self.boundary_ms < 0:
            return None
        acc = _combined(self._candles[i], self._bucket)
        if acc is not None:
            return acc.to_candle(self._opens[i], self._nexts[i] - 1)
        if self.last_price is None:
            return None
        return Candle.empty(self._opens[i], self._nexts[i] - 1, self.last_price)

    def forming_sums(self, i: int) -> Ohlcv | None:
        """``forming(i)`` without its times (``open_of``, ``close_of``) and without a
        copy: the result may be the builder's own, read it before the next trade and
        never change it (the live writer reads thousands a second)."""
        if self.boundary_ms < 0:
            return None
        c, b = self._candles[i], self._bucket
        if c is None:
            if b is not None:
                return b
            last = self.last_price
            return None if last is None else Ohlcv(last, last, last, last)
        return c if b is None else c.then(b)

    def forming_fields(self, i: int) -> tuple[int, int, int, int, int, int, int, int, int] | None:
        """``forming_sums(i)`` as a tuple (open, high, low, close, volume, quote volume,
        trades, taker-buy volume, taker-buy quote volume), built without an ``Ohlcv``:
        the live writer reads thousands a second."""
        if self.boundary_ms < 0:
            return None
        c, b = self._candles[i], self._bucket
        if c is None:
            if b is None:
                last = self.last_price
                return None if last is None else (last, last, last, last, 0, 0, 0, 0, 0)
            return (
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.quote_volume,
                b.trades,
                b.taker_buy_volume,
                b.taker_buy_quote_volume,
            )
        if b is None:
            return (
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.quote_volume,
                c.trades,
                c.taker_buy_volume,
                c.taker_buy_quote_volume,
            )
        return (  # Ohlcv.then, without the object
            c.open,
            b.high if b.high > c.high else c.high,
            b.low if b.low < c.low else c.low,
            b.close,
            c.volume + b.volume,
            c.quote_volume + b.quote_volume,
            c.trades + b.trades,
            c.taker_buy_volume + b.taker_buy_volume,
            c.taker_buy_quote_volume + b.taker_buy_quote_volume,
        )

    def periods(self) -> tuple[list[int], list[int], list[bool], list[bool]]:
        """For every interval at once: the forming candle's open time, the next open (its
        close time + 1), whether it is complete and whether ``previous`` is; the
        builder's own lists, not copies: read them, never change them (the live writer
        reads thousands of intervals a second)."""
        return self._opens, self._nexts, self._complete, self._previous_complete

    def close_of(self, i: int) -> int:
        return self._nexts[i] - 1

    def is_complete(self, i: int) -> bool:
        return self._complete[i]

    def previous_complete(self, i: int) -> bool:
        return self._previous_complete[i]

    def open_of(self, i: int) -> int:
        return self._opens[i]

    # -- seeding ------------------------------------------------------------------------

    def seed(self, i: int, snapshot: Candle, trades_after: Iterable[Trade]) -> bool:
        """Make the forming candle of interval ``i`` exact from an exchange snapshot
        (a kline update covering trades up to some id) plus the trades processed after
        it. Returns False when the snapshot is not for the forming period."""
        if self.boundary_ms < 0 or snapshot.open_ms != self._opens[i]:
            return False
        self._fold()
        acc = Ohlcv.of_candle(snapshot) if snapshot.trades else None
        for t in trades_after:
            if t.is_valid and t.time_ms >= snapshot.open_ms:
                if acc is None:
                    acc = Ohlcv.of_trade(t.price, t.quantity, t.count, t.buyer_is_maker)
                else:
                    acc.add_trade(t.price, t.quantity, t.count, t.buyer_is_maker)
        if acc is None and self.last_price is None:
            self.last_price = snapshot.close
        self._candles[i] = acc
        self._complete[i] = True
        self.all_complete = all(self._complete)
        return True
