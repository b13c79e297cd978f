"""The emulator's mini-ticker streams: ``<symbol>@miniTicker`` and ``!miniTicker@arr``.

Every ``period_ms`` (Binance: 1000 ms) each subscribed symbol's 24 h rolling window is
sent, computed from the market's own trades (``range_agg`` over the window, so open,
high, low, close and volumes are those of the trades the REST endpoints and the other
streams show); ``!miniTicker@arr`` sends the array of the symbols that traded since its
last event (Binance: "only symbols that changed"). The window opens on the minute 24 h
before now, as Binance's rolling-window tickers do (their ``O`` is on a minute), which
keeps the history part of the window cached for a minute. Nothing is computed while no
mini-ticker stream is subscribed.
"""

from __future__ import annotations

from collections.abc import Callable

from livecandle.domain.intervals import MINUTE_MS
from livecandle.domain.model import format_quote
from livecandle.emulator.schedule import Market
from livecandle.emulator.tape import Agg
from livecandle.emulator.wire import units

DAY_MS = 86_400_000
ALL_STREAMS = ("!miniTicker@arr", "!miniTicker@arr@1000ms")


def is_ticker_stream(stream: str) -> bool:
    return stream.endswith("@miniTicker") or stream in ALL_STREAMS


class TickerFeed:
    """Which mini-ticker streams are subscribed, and their events when due."""

    def __init__(self, market: Market, period_ms: int = 1000) -> None:
        self.market = market
        self.period_ms = period_ms
        self.by_symbol: dict[str, str] = {}  # SYMBOL -> its @miniTicker stream
        self.arrays: set[str] = set()  # the subscribed !miniTicker@arr names
        self.changed: set[str] = set()  # symbols that traded since the last array
        self.next_ms = 0
        self.sent = 0

    def add(self, stream: str) -> None:
        if stream in ALL_STREAMS:
            if not self.arrays:
                self.changed.clear()  # from now on
            self.arrays.add(stream)
        else:
            self.by_symbol[stream.partition("@")[0].upper()] = stream

    def remove(self, stream: str) -> None:
        if stream in ALL_STREAMS:
            self.arrays.discard(stream)
        else:
            symbol = stream.partition("@")[0].upper()
            if self.by_symbol.get(symbol) == stream:  # not another stream of the symbol
                del self.by_symbol[symbol]

    def traded(self, symbol: str) -> None:
        if self.arrays:
            self.changed.add(symbol)

    def tick(self, now_ms: int, emit: Callable[[str, str], None], silent: set[str]) -> None:
        """Send what is due at ``now_ms`` (at most one event per stream a period)."""
        if (not self.by_symbol and not self.arrays) or now_ms < self.next_ms:
            return
        self.next_ms = now_ms + self.period_ms
        for symbol, stream in self.by_symbol.items():
            if symbol in silent:
                continue
            payload = self.payload(symbol, now_ms)
            if payload is not None:
                emit(stream, payload)
                self.sent += 1
        if self.arrays:
            changed, self.changed = sorted(self.changed - silent), set()
            items = [p for p in (self.payload(s, now_ms) for s in changed) if p is not None]
            if items:
                body = "[" + ",".join(items) + "]"
                for stream in self.arrays:
                    emit(stream, body)
                    self.sent += 1

    def window(self, symbol: str, now_ms: int) -> Agg | None:
        """The aggregate of ``symbol``'s trades in its 24 h window at ``now_ms``."""
        if symbol not in self.market.listings:
            return None
        sm = self.market.symbols[symbol]
        start = (now_ms - DAY_MS) // MINUTE_MS * MINUTE_MS
        return sm.range_agg(start, min(now_ms, sm.revealed_ms) + 1)

    def payload(self, symbol: str, now_ms: int) -> str | None:
        agg = self.window(symbol, now_ms)
        if agg is None:
            return None
        return (
            f'{{"e":"24hrMiniTicker","E":{now_ms},"s":"{symbol}","c":"{units(agg[3])}",'
            f'"o":"{units(agg[0])}","h":"{units(agg[1])}","l":"{units(agg[2])}",'
            f'"v":"{units(agg[4])}","q":"{format_quote(agg[5])}"}}'
        )
