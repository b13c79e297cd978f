"""LiveWriter: forming candles and prices into Redis, coalesced and pipelined.

Whatever the trade rate, each ``live_candle`` / ``live_price`` key is written at most
once per period (default 100 ms), in one pipelined round trip that also publishes one
batch message for the web app and ``candle_closed`` notifications for the fetcher.
The writer reads the builders' state at flush time, so a slow Redis only delays the
next flush; it never holds back the socket reader or the aggregation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from livecandle.aggregator import ClosedCandle, LiveCandleBuilder
from livecandle.model import Candle, SeriesKey, format_units
from livecandle.store import LiveWrite, Store

log = logging.getLogger(__name__)

_enc = msgspec.json.Encoder()


def live_value(
    symbol: str,
    interval: str,
    forming: Candle,
    complete: bool,
    previous: Candle | None,
    previous_complete: bool,
    now_ms: int,
) -> dict[str, Any]:
    """The ``live_candle`` JSON (DESIGN.md section 2): the forming candle, flagged
    incomplete, and the just-closed one, unconfirmed until its official candle is stored."""
    value: dict[str, Any] = {
        "symbol": symbol,
        "interval": interval,
        **forming.live_fields(),
        "is_incomplete": True,
        "source": "live",
        "complete": complete,
        "updated_ms": now_ms,
        "previous": None,
    }
    if previous is not None:
        value["previous"] = {
            **previous.live_fields(),
            "is_incomplete": False,
            "confirmed": False,
            "source": "live",
            "complete": previous_complete,
        }
    return value


@dataclass
class SymbolLive:
    """What the writer needs from one symbol's live state."""

    symbol: str
    builder: LiveCandleBuilder
    dirty: bool = False
    last_trade_ms: int = 0
    price_dirty: bool = False
    closed: list[ClosedCandle] = field(default_factory=list)


class LiveWriter:
    def __init__(
        self,
        store: Store,
        symbols: dict[str, SymbolLive],
        now_ms: Callable[[], int],
        period_ms: int = 100,
    ) -> None:
        self.store = store
        self.symbols = symbols
        self.now_ms = now_ms
        self.period_ms = period_ms
        self.flushes = 0
        self.keys_written = 0
        self.last_flush_s = 0.0
        self.errors = 0
        self._announced: set[tuple[str, str, int]] = set()

    async def run(self) -> None:
        period = self.period_ms / 1000
        while True:
            started = time.monotonic()
            await self.flush()
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def flush(self) -> int:
        """Write what changed since the last flush; returns the number of keys written."""
        now = self.now_ms()
        writes: list[LiveWrite] = []
        prices: list[tuple[str, bytes]] = []
        batch_candles: list[dict[str, Any]] = []
        batch_prices: list[dict[str, Any]] = []
        closed_msgs: list[bytes] = []
        for st in self.symbols.values():
            if st.price_dirty and st.builder.last_price is not None:
                price = {
                    "symbol": st.symbol,
                    "price": format_units(st.builder.last_price),
                    "time": st.last_trade_ms,
                }
                prices.append((st.symbol, _enc.encode(price)))
                batch_prices.append(price)
                st.price_dirty = False
            if st.closed:
                for c in st.closed:
                    key = (st.symbol, c.interval.name, c.candle.open_ms)
                    if not c.correction and key not in self._announced:
                        self._announced.add(key)
                        closed_msgs.append(
                            _enc.encode(
                                {
                                    "symbol": st.symbol,
                                    "interval": c.interval.name,
                                    "open_ms": c.candle.open_ms,
                                    "complete": c.complete,
                                }
                            )
                        )
                st.closed.clear()
                if len(self._announced) > 100_000:
                    self._announced.clear()
            if not st.dirty:
                continue
            st.dirty = False
            b = st.builder
            for i, interval in enumerate(b.intervals):
                forming = b.forming(i)
                if forming is None:
                    continue
                value = live_value(
                    st.symbol,
                    interval.name,
                    forming,
                    b.is_complete(i),
                    b.previous[i],
                    b.previous_complete(i),
                    now,
                )
                writes.append(LiveWrite(SeriesKey(st.symbol, interval), _enc.encode(value)))
                batch_candles.append(value)
        if not writes and not prices and not closed_msgs:
            return 0
        message = None
        if batch_candles or batch_prices:
            message = _enc.encode({"time": now, "prices": batch_prices, "candles": batch_candles})
        started = time.monotonic()
        try:
            await self.store.write_live(writes, prices, message, closed_msgs)
        except Exception:
            self.errors += 1
            log.exception("live write failed; the next flush writes the newest state")
            for st in self.symbols.values():
                st.dirty = True
            return 0
        self.last_flush_s = time.monotonic() - started
        self.flushes += 1
        self.keys_written += len(writes) + len(prices)
        return len(writes) + len(prices)
