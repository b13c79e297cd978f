"""A seeded synthetic spot market whose klines are computed from its own trades.

History (before the emulator started) is random-access: it is cut into blocks whose
trades are a pure function of (seed, symbol, block), so years of klines are computed on
demand without generating every trade. The block size grows with age (1 s blocks for the
last two minutes, 5 min for a day, 1 h for thirty days, 1 day before that) so a symbol's
whole history costs a few thousand trades to compute, however deep (the cost that
matters when the whole market's history is asked for). Blocks are made a chunk at a
time with numpy and runs of candles aggregated in one pass (``history``).
Live trades (after the start) are placed by the market's one schedule (``schedule``); a
live trade is stored as (time, price, first trade id) in flat arrays (24 bytes) and its
quantity, side and size are a pure function of (symbol, aggregate id). Trade and
aggregate-trade ids are contiguous over the whole life of a symbol. A symbol listed while
the emulator runs has no history: its first kline is the one it was listed in.

Prices lie on a 0.01 tick and quantities on a 0.00001 step, so every price x quantity is
exact at 8 decimals, the precision Binance prints.
"""

from __future__ import annotations

import bisect
import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from livecandle.domain.intervals import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, Interval
from livecandle.domain.model import SCALE
from livecandle.emulator.history import (
    CHUNK,
    I64,
    Chunk,
    ChunkCache,
    PricePath,
    aggregates,
    reduce,
)
from livecandle.emulator.tape import (
    _M64,
    Agg,
    Tier,
    TradeTuple,
    _hash64,
    _mix64,
    agg_add,
    agg_merge,
)

TICK = SCALE // 100  # 0.01
STEP = SCALE // 100_000  # 0.00001

_BASE_PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "BNBUSDT": 500.0, "SOLUSDT": 150.0}


@dataclass(slots=True)
class Revealed:
    """The time up to which the market's trades are revealed (shared by every symbol)."""

    ms: int


@dataclass
class SymbolMarket:
    symbol: str
    seed: int
    live_start_ms: int
    history_days: int = 1100
    outages_ms: tuple[tuple[int, int], ...] = ()
    clock: Revealed = field(default_factory=lambda: Revealed(-1))
    listed_ms: int | None = None  # set for a listing at run time: no history before it
    cache_share: float = 1.0  # this symbol's share of the market's cache budget
    # this symbol's history chunks. One per symbol, not one for the market: a fetcher
    # that asks interval by interval across 1,600 symbols would have a market-wide LRU
    # (1M trades) make each chunk again for every interval, twice the CPU of the whole
    # market's backfill (72 -> 141 s measured); kept, a symbol's whole history is ~14k
    # aggregates, the whole market's ~1.2 GB of RSS after a backfill of every series
    chunks: ChunkCache = field(default_factory=ChunkCache)
    tiers: list[Tier] = field(init=False)

    def __post_init__(self) -> None:
        self._key = _hash64(self.seed, self.symbol)
        rnd = random.Random(self._key)
        self.base_price = _BASE_PRICES.get(self.symbol, 10.0 + rnd.random() * 990.0)
        self._noise = [
            (30 * DAY_MS, 0.35),
            (4 * DAY_MS, 0.10),
            (8 * HOUR_MS, 0.035),
            (45 * MINUTE_MS, 0.012),
            (4 * MINUTE_MS, 0.004),
            (20 * SECOND_MS, 0.0012),
        ]
        self._noise_keys = [_hash64(self._key, i) for i in range(len(self._noise))]
        self._path = PricePath(self.base_price, tuple(self._noise), tuple(self._noise_keys))
        self._lattice: dict[tuple[int, int], float] = {}
        self._history_aggs: dict[tuple[int, int], Agg | None] = {}
        self._fair_bucket = -1
        self._fair = 0.0
        L = self.live_start_ms
        a_end = L
        a_start = L - 2 * MINUTE_MS
        b_start = (L - DAY_MS) // HOUR_MS * HOUR_MS
        self.listing_ms = (L - self.history_days * DAY_MS) // DAY_MS * DAY_MS
        if self.listed_ms is not None:
            self.listing_ms = self.listed_ms
        d_start = max(self.listing_ms, (L - 30 * DAY_MS) // DAY_MS * DAY_MS)
        specs = [
            (self.listing_ms, d_start, DAY_MS, 6, 12),
            (d_start, b_start, HOUR_MS, 6, 12),
            (b_start, a_start, 5 * MINUTE_MS, 10, 20),
            (a_start, a_end, SECOND_MS, 1, 2),
        ]
        self.tiers = []
        agg_id = trade_id = 0
        for start, end, block_ms, aggs, trades in specs:
            if self.listed_ms is not None:
                start = max(start, self.listed_ms)
            if end <= start:
                continue
            outages = self._outage_blocks(start, end, block_ms)
            tier = Tier(start, end, block_ms, aggs, trades, agg_id, trade_id, outages)
            self.tiers.append(tier)
            agg_id += tier.live_blocks * aggs
            trade_id += tier.live_blocks * trades
        self.live_first_agg = agg_id
        self.live_first_trade = trade_id
        self._live_key = _hash64(self._key, "live")
        # live trades: flat arrays, the rest of a trade derives from its id (see _trade)
        self.times = array("q")
        self._prices = array("q")
        self._firsts = array("q")
        self._next_trade = trade_id
        self.minute_aggs: dict[int, Agg] = {}
        # bounded per symbol so that the whole market stays within a few hundred MB
        self._max_history_aggs = max(64, int(100_000 * self.cache_share))

    @property
    def revealed_ms(self) -> int:
        return self.clock.ms

    def _outage_blocks(self, start: int, end: int, block_ms: int) -> tuple[tuple[int, int], ...]:
        out = []
        for o0, o1 in sorted(self.outages_ms):
            lo, hi = max(o0, start), min(o1, end)
            if hi <= lo:
                continue
            b0 = -(-(lo - start) // block_ms)  # blocks wholly inside the outage
            b1 = (hi - start) // block_ms
            if b1 > b0:
                out.append((b0, b1))
        return tuple(out)

    def in_outage(self, start_ms: int, end_ms: int) -> bool:
        """True when ``[start_ms, end_ms)`` lies wholly inside an exchange outage."""
        return any(o0 <= start_ms and end_ms <= o1 for o0, o1 in self.outages_ms)

    # -- prices -------------------------------------------------------------------------

    def path(self, t_ms: int, scales: int = 6) -> float:
        """The market's fair price at ``t_ms``: smooth value noise over up to six time
        scales (deep history, cut in hour blocks, skips the finest ones). Coarse lattice
        points are kept: each is shared by many trades (bounded, then started over)."""
        x = 0.0
        lattice = self._lattice
        if len(lattice) > 2_000:  # bounded: a symbol's lattice stays a few hundred KB
            lattice.clear()
        for k in range(scales):
            period, amp = self._noise[k]
            i, r = divmod(t_ms, period)
            f = r / period
            f = f * f * (3 - 2 * f)
            if k < 4:  # coarse scales: few lattice points, reused by many trades
                a = lattice.get((k, i))
                if a is None:
                    a = lattice[(k, i)] = _mix64(self._noise_keys[k] ^ i) / 2**63 - 1
                b = lattice.get((k, i + 1))
                if b is None:
                    b = lattice[(k, i + 1)] = _mix64(self._noise_keys[k] ^ (i + 1)) / 2**63 - 1
            else:
                a = _mix64(self._noise_keys[k] ^ i) / 2**63 - 1
                b = _mix64(self._noise_keys[k] ^ (i + 1)) / 2**63 - 1
            x += amp * (a + (b - a) * f)
        return self.base_price * math.exp(x)

    def _price(self, t_ms: int, rng: random.Random) -> int:
        bucket = t_ms >> 4  # the fair price moves in 16 ms steps: one path() per step
        if bucket != self._fair_bucket:
            self._fair_bucket = bucket
            self._fair = self.path(bucket << 4)
        p = self._fair * (1 + (rng.random() - 0.5) * 0.0008)
        return max(1, round(p * 100)) * TICK

    # -- history ------------------------------------------------------------------------

    def _chunk(self, ti: int, c: int) -> Chunk:
        tier = self.tiers[ti]
        return self.chunks.get((self._key, ti, tier.start_ms, c), tier, self._path)

    def block_trades(self, ti: int, b: int) -> list[TradeTuple]:
        return self._chunk(ti, b // CHUNK).block_trades(b)

    def history_reduce(self, bounds: list[int] | I64) -> tuple[I64, I64]:
        """The history trades in each ``[bounds[i], bounds[i + 1])`` (ascending bounds),
        reduced in one pass over every tier's chunks (``history.reduce``)."""
        chunks: list[Chunk] = []
        for ti, tier in enumerate(self.tiers):
            lo, hi = max(int(bounds[0]), tier.start_ms), min(int(bounds[-1]), tier.end_ms)
            if hi <= lo:
                continue
            first = (lo - tier.start_ms) // tier.block_ms // CHUNK
            last = (hi - 1 - tier.start_ms) // tier.block_ms // CHUNK
            chunks += [self._chunk(ti, c) for c in range(first, last + 1)]
        return reduce(chunks, bounds)

    def history_aggs(self, bounds: list[int]) -> list[Agg | None]:
        """The aggregate of the history trades in each ``[bounds[i], bounds[i + 1])``."""
        return aggregates(*self.history_reduce(bounds), len(bounds) - 1)

    def _history_range(self, a: int, b: int) -> Agg | None:
        return self.history_aggs([a, b])[0]

    # -- live ---------------------------------------------------------------------------

    def add_trade(self, ts: int) -> TradeTuple:
        """Append the next live trade, at ``ts`` (never before the previous one)."""
        i = len(self.times)
        agg_id = self.live_first_agg + i
        h = (self._live_key + agg_id + 0x9E3779B97F4A7C15) & _M64  # _mix64, inline
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
        h ^= h >> 31
        second = ts // SECOND_MS
        if second != self._fair_bucket:  # the fair price moves in 1 s steps
            self._fair_bucket = second
            self._fair = self.path(second * SECOND_MS)
        jitter = ((h >> 32) % 1_000_001) / 1_000_000 - 0.5
        price = max(1, round(self._fair * (1 + jitter * 0.0008) * 100)) * TICK
        first = self._next_trade
        last = first + (0 if h & 1023 < 717 else 1 + (h >> 10) % 4)
        self._next_trade = last + 1
        self.times.append(ts)
        self._prices.append(price)
        self._firsts.append(first)
        t = (agg_id, price, (1 + (h >> 12) % 20_000) * STEP, first, last, ts, bool(h >> 63))
        m = ts // MINUTE_MS
        aggs = self.minute_aggs
        aggs[m] = agg_add(aggs.get(m), t)
        return t

    def _trade(self, i: int) -> TradeTuple:
        """The i-th live trade: quantity, size and side from a hash of its id."""
        agg_id = self.live_first_agg + i
        h = _mix64(self._live_key + agg_id)
        count = 1 if h & 1023 < 717 else 2 + (h >> 10) % 4
        qty = (1 + (h >> 12) % 20_000) * STEP
        first = self._firsts[i]
        last = first + count - 1
        return (agg_id, self._prices[i], qty, first, last, self.times[i], bool(h >> 63))

    @property
    def live_trades(self) -> int:
        return len(self.times)

    def _live_range(self, a: int, b: int) -> Agg | None:
        a = max(a, self.live_start_ms)
        b = min(b, self.revealed_ms + 1)
        if b <= a:
            return None
        return self._live_span(a, b, 0)

    def _live_span(self, a: int, b: int, level: int) -> Agg | None:
        """``[a, b)`` from whole minutes, and the trades of the partial minutes at its
        ends: a closed candle costs a lookup per minute, whatever its trades."""
        if b <= a:
            return None
        first = -(-a // MINUTE_MS)
        last = b // MINUTE_MS  # minutes [first, last) lie whole inside [a, b)
        if last <= first:
            return self._live_trades_range(a, b)
        agg = self._live_trades_range(a, first * MINUTE_MS)
        aggs = self.minute_aggs
        for u in range(first, last):
            agg = agg_merge(agg, aggs.get(u))
        return agg_merge(agg, self._live_trades_range(last * MINUTE_MS, b))

    def _live_trades_range(self, a: int, b: int) -> Agg | None:
        if b <= a:
            return None
        i = bisect.bisect_left(self.times, a)
        j = bisect.bisect_left(self.times, b)
        agg: Agg | None = None
        trade = self._trade
        for k in range(i, j):
            agg = agg_add(agg, trade(k))
        return agg

    # -- queries ------------------------------------------------------------------------

    def range_agg(self, a: int, b: int) -> Agg | None:
        """Aggregate of every revealed trade with time in ``[a, b)``."""
        agg = None
        if a < self.live_start_ms:
            key = (a, min(b, self.live_start_ms))  # history never changes: keep it
            if key in self._history_aggs:
                agg = self._history_aggs[key]
            else:
                agg = self._history_aggs[key] = self._history_range(*key)
                if len(self._history_aggs) > self._max_history_aggs:
                    self._history_aggs.clear()
            agg = None if agg is None else list(agg)
        if b > self.live_start_ms:
            agg = agg_merge(agg, self._live_range(a, b))
        return agg

    def last_price_before(self, t_ms: int) -> int | None:
        if t_ms > self.live_start_ms and self.times:
            i = bisect.bisect_left(self.times, t_ms)
            if i > 0:
                return self._prices[i - 1]
        t = min(t_ms, self.live_start_ms)
        for ti in range(len(self.tiers) - 1, -1, -1):
            tier = self.tiers[ti]
            if tier.start_ms >= t:
                continue
            # whole blocks only: a partial block past the tier's end holds no trade
            blk = min((min(t, tier.end_ms) - 1 - tier.start_ms) // tier.block_ms, tier.blocks - 1)
            while blk >= 0:
                for tr in reversed(self.block_trades(ti, blk)):
                    if tr[5] < t:
                        return tr[1]
                blk -= 1
        return None

    def price_before(self, t_ms: int) -> int:
        """The price an empty kline opening at ``t_ms`` shows: the last trade's before it,
        or, before the first trade, one near the fair price."""
        price = self.last_price_before(t_ms)
        return self._price(t_ms, random.Random(0)) if price is None else price

    def first_open(self, interval: Interval) -> int:
        return interval.open_of(self.listing_ms)

    # -- aggTrades ----------------------------------------------------------------------

    @property
    def last_agg_id(self) -> int:
        return self.live_first_agg + len(self.times) - 1

    def trades_from_id(self, from_id: int) -> Iterator[TradeTuple]:
        if from_id < self.live_first_agg:
            for ti, tier in enumerate(self.tiers):
                end_id = tier.first_agg + tier.live_blocks * tier.aggs
                if from_id >= end_id:
                    continue
                k = max(0, from_id - tier.first_agg) // tier.aggs
                while k < tier.live_blocks:
                    for t in self.block_trades(ti, tier.block_of_rank(k)):
                        if t[0] >= from_id:
                            yield t
                    k += 1
        for i in range(max(0, from_id - self.live_first_agg), len(self.times)):
            yield self._trade(i)

    def trades_from_time(self, start_ms: int) -> Iterator[TradeTuple]:
        if start_ms < self.live_start_ms:
            for ti, tier in enumerate(self.tiers):
                if tier.end_ms <= start_ms:
                    continue
                blk = max(0, (start_ms - tier.start_ms) // tier.block_ms)
                while blk < tier.blocks:
                    for t in self.block_trades(ti, blk):
                        if t[5] >= start_ms:
                            yield t
                    blk += 1
        for i in range(bisect.bisect_left(self.times, start_ms), len(self.times)):
            yield self._trade(i)
