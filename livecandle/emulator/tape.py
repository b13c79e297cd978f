"""The emulator's own candle arithmetic and history blocks (the independent oracle).

Kept apart from the service's ``Ohlcv`` on purpose: exactness tests compare the service's
candles with candles the emulator computes its own way. An aggregate is a positional list
``[open, high, low, close, volume, quote, trades, taker_vol, taker_quote, first_trade_id,
last_trade_id]``; a trade a tuple ``(agg_id, price, qty, first_trade_id, last_trade_id,
time_ms, buyer_is_maker)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from livecandle.domain.model import SCALE, Candle

# A trade: (agg_id, price, qty, first_trade_id, last_trade_id, time_ms, buyer_is_maker)
TradeTuple = tuple[int, int, int, int, int, int, bool]
# An aggregate: [open, high, low, close, volume, quote, trades, taker_vol, taker_quote,
#                first_trade_id, last_trade_id]
Agg = list[int]


_M64 = (1 << 64) - 1


def _hash64(*parts: object) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def agg_add(agg: Agg | None, t: TradeTuple) -> Agg:
    price, qty = t[1], t[2]
    n = t[4] - t[3] + 1
    quote = price * qty
    if agg is None:
        if t[6]:
            return [price, price, price, price, qty, quote, n, 0, 0, t[3], t[4]]
        return [price, price, price, price, qty, quote, n, qty, quote, t[3], t[4]]
    if price > agg[1]:
        agg[1] = price
    elif price < agg[2]:
        agg[2] = price
    agg[3] = price
    agg[4] += qty
    agg[5] += quote
    agg[6] += n
    agg[10] = t[4]
    if not t[6]:
        agg[7] += qty
        agg[8] += quote
    return agg


def agg_merge(a: Agg | None, b: Agg | None) -> Agg | None:
    """``a`` then ``b`` (time order); returns a new list."""
    if a is None:
        return list(b) if b is not None else None
    if b is None:
        return list(a)
    return [
        a[0],
        max(a[1], b[1]),
        min(a[2], b[2]),
        b[3],
        a[4] + b[4],
        a[5] + b[5],
        a[6] + b[6],
        a[7] + b[7],
        a[8] + b[8],
        a[9],
        b[10],
    ]


def quote8(q: int) -> int:
    """A 1e-16 quote amount in 1e-8 units, rounding half to even (``format_quote``)."""
    whole, rest = divmod(q, SCALE)
    if rest * 2 > SCALE or (rest * 2 == SCALE and whole % 2):
        whole += 1
    return whole


def agg_candle(agg: Agg, open_ms: int, close_ms: int) -> Candle:
    return Candle(
        open_ms, close_ms, agg[0], agg[1], agg[2], agg[3], agg[4], agg[5], agg[6], agg[7], agg[8]
    )


@dataclass(frozen=True, slots=True)
class Tier:
    """History blocks of one size: ``[start_ms, end_ms)`` cut into ``block_ms`` blocks."""

    start_ms: int
    end_ms: int
    block_ms: int
    aggs: int  # aggTrades per block
    trades: int  # individual trades per block
    first_agg: int
    first_trade: int
    outages: tuple[tuple[int, int], ...]  # block index ranges [b0, b1) without trades

    @property
    def blocks(self) -> int:
        return (self.end_ms - self.start_ms) // self.block_ms

    def dead_before(self, b: int) -> int:
        return sum(max(0, min(b, b1) - b0) for b0, b1 in self.outages if b0 < b)

    def is_dead(self, b: int) -> bool:
        return any(b0 <= b < b1 for b0, b1 in self.outages)

    @property
    def live_blocks(self) -> int:
        return self.blocks - self.dead_before(self.blocks)

    def block_of_rank(self, k: int) -> int:
        """The block index of the k-th block that has trades."""
        b = k
        for b0, b1 in self.outages:
            if b0 <= b:
                b += b1 - b0
            else:
                break
        return b
