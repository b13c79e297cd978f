"""The kline streams' candles, kept up to date at a cost that follows trades.

Every subscribed ``<symbol>@kline_<interval>`` has a ``KlineSeries``: the aggregate of
its candle up to the start of the current minute (folded forward a minute at a time from
the market's minute aggregates) plus the market's aggregate of the current minute. A
symbol that traded is due for an update of its series at most every ``period_s``; at each
interval's close every subscribed series gets its final kline (``x: true``), also when
the candle had no trade, as Binance sends it.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from livecandle.domain.intervals import INTERVALS, MINUTE_MS, Interval
from livecandle.domain.model import SCALE
from livecandle.emulator.market import SymbolMarket
from livecandle.emulator.schedule import Market
from livecandle.emulator.tape import Agg, agg_merge, quote8


@dataclass(slots=True)
class KlineSeries:
    stream: str
    symbol: str
    interval: Interval
    open_ms: int = -1
    prefix: Agg | None = None  # trades in [open_ms, prefix_until)
    prefix_until: int = -1
    sent_last_id: int = -2  # the last trade id of the last update sent
    last_close: int | None = None  # the close of the previous final (empty candles)
    warm: bool = False  # its first candle (reaching into history) has been computed
    final_pending: int = 0  # finals queued, not sent yet


class KlineFeed:
    """Which kline series are subscribed, and what each should be sent now."""

    def __init__(self, market: Market, period_s: float = 2.0, budget_s: float = 0.02) -> None:
        self.market = market
        self.period_s = period_s
        self.budget_s = budget_s  # per tick: the rest waits (keeps the server answering)
        self.series: dict[str, KlineSeries] = {}
        self.by_symbol: dict[str, list[KlineSeries]] = {}
        self.by_interval: dict[str, dict[str, KlineSeries]] = {}
        self.next_close: dict[str, int] = {}
        self.due: list[tuple[float, str]] = []
        self.finals: deque[tuple[KlineSeries, int, int]] = deque()
        self._waiting: set[str] = set()
        self._last_push: dict[str, float] = {}

    # -- subscriptions ------------------------------------------------------------------

    def add(self, stream: str) -> None:
        symbol_l, _, name = stream.partition("@kline_")
        interval = INTERVALS[name]
        s = KlineSeries(stream, symbol_l.upper(), interval)
        self.series[stream] = s
        self.by_symbol.setdefault(s.symbol, []).append(s)
        self.by_interval.setdefault(name, {})[stream] = s
        # due now: its candle's history is computed soon, under the ticker's time budget,
        # not all at once at the first close
        self.traded(s.symbol, time.monotonic())

    def remove(self, stream: str) -> None:
        s = self.series.pop(stream, None)
        if s is None:
            return
        self.by_symbol[s.symbol].remove(s)
        if not self.by_symbol[s.symbol]:
            del self.by_symbol[s.symbol]
        del self.by_interval[s.interval.name][stream]

    # -- what to send -------------------------------------------------------------------

    def cold(self) -> int:
        """Series whose first candle is still to be computed (after subscribing)."""
        return sum(not s.warm for s in self.series.values())

    def traded(self, symbol: str, now_s: float) -> None:
        """``symbol`` has new trades: its series are due within ``period_s``."""
        if symbol in self._waiting or symbol not in self.by_symbol:
            return
        self._waiting.add(symbol)
        due = max(now_s, self._last_push.get(symbol, 0.0) + self.period_s)
        heapq.heappush(self.due, (due, symbol))

    def updates(
        self, now_ms: int, now_s: float, emit: Callable[[str, str], None], silent: set[str]
    ) -> None:
        """Send the forming candle of every due symbol's series that changed."""
        due = self.due
        deadline = time.monotonic() + self.budget_s
        while self.finals and time.monotonic() < deadline:
            # finals first, oldest first; a series with one pending gets no update
            s, opened, closed = self.finals.popleft()
            s.final_pending -= 1
            self._final(s, opened, closed, now_ms, emit, silent)
        while due and due[0][0] <= now_s and time.monotonic() < deadline:
            _, symbol = heapq.heappop(due)
            self._waiting.discard(symbol)
            self._last_push[symbol] = now_s
            if symbol not in self.market.listings or symbol in silent:
                continue
            sm = self.market.symbols[symbol]
            for s in self.by_symbol.get(symbol, ()):
                if s.final_pending:  # its final goes first: come back to this symbol
                    self.traded(symbol, now_s)
                    continue
                agg = self._agg(s, sm, now_ms, sm.revealed_ms + 1)
                if agg is not None and agg[10] != s.sent_last_id:
                    s.sent_last_id = agg[10]
                    opened = s.interval.open_of(now_ms)
                    emit(s.stream, kline_payload(s, sm, agg, opened, now_ms, final=False))

    def closes(self, now_ms: int) -> None:
        """Queue the final kline of every subscribed series whose candle closed by
        ``now_ms``; ``updates`` sends them (within its time budget: a series whose first
        candle reaches into history costs more than the tick)."""
        for name, streams in self.by_interval.items():
            if not streams:
                # nobody listens: a later subscriber starts from the next close, not
                # with a final of every candle that closed meanwhile
                self.next_close.pop(name, None)
                continue
            interval = INTERVALS[name]
            nxt = self.next_close.get(name)
            if nxt is None:
                self.next_close[name] = interval.next_open(interval.open_of(now_ms))
                continue
            while nxt <= now_ms:
                opened = interval.shift(nxt, -1)
                for s in streams.values():
                    s.final_pending += 1
                    self.finals.append((s, opened, nxt))
                nxt = interval.next_open(nxt)
            self.next_close[name] = nxt

    def _final(
        self,
        s: KlineSeries,
        open_ms: int,
        close_ms: int,
        now_ms: int,
        emit: Callable[[str, str], None],
        silent: set[str],
    ) -> None:
        listing = self.market.listings.get(s.symbol)
        if (
            self.series.get(s.stream) is not s
            or listing is None
            or listing.status == "BREAK"
            or s.symbol in silent
        ):
            s.open_ms = -1  # no market data: start over after it
            return
        sm = self.market.symbols[s.symbol]
        if close_ms <= sm.listing_ms:
            return
        agg = self._agg(s, sm, open_ms, close_ms)
        if agg is None:
            price = s.last_close
            if price is None:
                price = sm.last_price_before(open_ms) or 0
            agg = [price, price, price, price, 0, 0, 0, 0, 0, -1, -1]
        s.last_close = agg[3]
        emit(s.stream, kline_payload(s, sm, agg, open_ms, now_ms, final=True))
        s.open_ms = -1

    def _agg(self, s: KlineSeries, sm: SymbolMarket, at_ms: int, until: int) -> Agg | None:
        """Trades of the candle holding ``at_ms``, up to ``until`` (exclusive)."""
        interval = s.interval
        open_ms = interval.open_of(at_ms)
        end = min(until, interval.next_open(open_ms))
        s.warm = True
        if interval.length_ms and interval.length_ms < MINUTE_MS:
            return sm.range_agg(open_ms, end)
        if s.open_ms != open_ms:
            s.open_ms, s.prefix, s.prefix_until = open_ms, None, open_ms
        minute = max(open_ms, end // MINUTE_MS * MINUTE_MS)
        if s.prefix_until < minute:
            s.prefix = agg_merge(s.prefix, sm.range_agg(s.prefix_until, minute))
            s.prefix_until = minute
        if end == minute:
            return s.prefix
        if end > sm.revealed_ms and minute >= sm.live_start_ms:
            tail = sm.minute_aggs.get(minute // MINUTE_MS)  # the minute so far, kept by market
        else:
            tail = sm.range_agg(minute, end)
        return agg_merge(s.prefix, tail)


# Binance's kline event: one ``%`` per event (the amounts as whole and 8-digit parts)
_KLINE = (
    '{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,"s":"%s","i":"%s","f":%d,"L":%d,'
    '"o":"%d.%08d","c":"%d.%08d","h":"%d.%08d","l":"%d.%08d","v":"%d.%08d","n":%d,"x":%s,'
    '"q":"%d.%08d","V":"%d.%08d","Q":"%d.%08d","B":"0"}}'
)


def kline_payload(
    s: KlineSeries, sm: SymbolMarket, agg: Agg, open_ms: int, now_ms: int, final: bool
) -> str:
    """Binance's kline event, formatted directly (one string per event, whoever reads it;
    the market's amounts are never negative)."""
    close_ms = s.interval.next_open(open_ms) - 1
    symbol = sm.symbol
    o, h, low, c, v, q, n, tv, tq, f, last = agg
    q, tq = quote8(q), quote8(tq)
    S = SCALE
    return _KLINE % (
        now_ms,
        symbol,
        open_ms,
        close_ms,
        symbol,
        s.interval.name,
        f,
        last,
        o // S,
        o % S,
        c // S,
        c % S,
        h // S,
        h % S,
        low // S,
        low % S,
        v // S,
        v % S,
        n,
        "true" if final else "false",
        q // S,
        q % S,
        tv // S,
        tv % S,
        tq // S,
        tq % S,
    )
