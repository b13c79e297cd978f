"""A symbol's trades before the emulator started, made a chunk of blocks at a time.

History is cut into tiers of blocks (``tape.Tier``) whose trades are a pure function of
(seed, symbol, tier, block). Made one trade at a time in Python, the whole market's
history cost more than the service it fed (a 1,000-row klines answer took tens of
milliseconds to seconds, warming 1,600 symbols' kline streams a minute of CPU). Here
``CHUNK`` blocks are made at once as numpy columns, and a run of candles is reduced
from them in one pass (``reduce``: numpy columns, which klines answers keep to the end;
``aggregates`` turns them into ``tape.Agg`` lists): the same trades, whoever asks
(klines, aggTrades, the kline streams), so every kline still equals the aggregation of
its own aggTrades.

Chunks are kept in one LRU for the whole market (``ChunkCache``), bounded in trades.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from livecandle.domain.intervals import HOUR_MS
from livecandle.emulator.tape import Agg, Tier, TradeTuple

CHUNK = 256  # blocks per chunk: a day of 5-minute blocks, ten of hour blocks
TICK_UNITS = 1_000_000  # one price tick (0.01) in 1e-8 units
STEP_UNITS = 1_000  # one quantity step (0.00001) in 1e-8 units

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


def mix64(x: U64) -> U64:
    """splitmix64's finaliser on uint64 columns (wrapping arithmetic), as ``tape._mix64``."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True, slots=True)
class PricePath:
    """A symbol's fair price: value noise over up to six time scales (``market.path``)."""

    base_price: float
    noise: tuple[tuple[int, float], ...]  # (period_ms, amplitude), coarsest first
    keys: tuple[int, ...]

    def at(self, t_ms: I64, scales: int) -> F64:
        x = np.zeros(t_ms.shape, np.float64)
        for k in range(scales):
            period, amp = self.noise[k]
            i = t_ms // period
            f = (t_ms % period) / period
            f = f * f * (3 - 2 * f)
            key = np.uint64(self.keys[k])
            a = mix64(key ^ i.astype(np.uint64)).astype(np.float64) / 2**63 - 1
            b = mix64(key ^ (i + 1).astype(np.uint64)).astype(np.float64) / 2**63 - 1
            x += amp * (a + (b - a) * f)
        return self.base_price * np.exp(x)


@dataclass(slots=True)
class Chunk:
    """Trades of blocks ``[first_block, first_block + CHUNK)`` of a tier, in time order.

    Columns: time, price in ticks, quantity in steps, aggregate id, first and last trade
    id, buyer is maker. Block k's trades are rows ``[starts[k], starts[k + 1])``."""

    first_block: int
    starts: list[int]
    times: I64
    ticks: I64
    steps: I64
    agg_ids: I64
    firsts: I64
    lasts: I64
    makers: npt.NDArray[np.bool_]

    @property
    def size(self) -> int:
        return len(self.times)

    def trades(self, lo: int, hi: int) -> list[TradeTuple]:
        """Rows ``[lo, hi)`` as trade tuples."""
        return list(
            zip(
                self.agg_ids[lo:hi].tolist(),
                (self.ticks[lo:hi] * TICK_UNITS).tolist(),
                (self.steps[lo:hi] * STEP_UNITS).tolist(),
                self.firsts[lo:hi].tolist(),
                self.lasts[lo:hi].tolist(),
                self.times[lo:hi].tolist(),
                self.makers[lo:hi].tolist(),
                strict=True,
            )
        )

    def block_trades(self, b: int) -> list[TradeTuple]:
        k = b - self.first_block
        return self.trades(self.starts[k], self.starts[k + 1])


def make_chunk(key: int, ti: int, tier: Tier, c: int, path: PricePath) -> Chunk:
    """Blocks ``[c * CHUNK, (c + 1) * CHUNK)`` of tier ``ti`` (clipped to the tier).

    Counter-based randomness, as one block at a time: draw j of block b is
    mix64(mix64(key ^ ti << 48 ^ b) + j), which gives a trade its offset in the block (low
    32 bits), quantity, price jitter and side; draw 100 says which aggregates hold the
    extra individual trades (4 bits each)."""
    b0 = c * CHUNK
    b1 = min(tier.blocks, b0 + CHUNK)
    n, extra = tier.aggs, tier.trades - tier.aggs
    if tier.outages:
        blocks = [b for b in range(b0, b1) if not tier.is_dead(b)]
        bs = np.array(blocks, np.int64)
        ranks = np.array([b - tier.dead_before(b) for b in blocks], np.int64)
        live = set(blocks)
        starts = list(
            itertools.accumulate((n if b in live else 0 for b in range(b0, b1)), initial=0)
        )
    else:
        bs = np.arange(b0, b1, dtype=np.int64)
        ranks = bs
        starts = list(range(0, (b1 - b0) * n + 1, n))
    nb = len(bs)
    bkey = mix64(np.uint64(key ^ (ti << 48)) ^ bs.astype(np.uint64))
    draws = mix64(bkey[:, None] + np.arange(n, dtype=np.uint64)[None, :])  # (nb, n)
    offsets = (draws & np.uint64(0xFFFFFFFF)) % np.uint64(tier.block_ms)
    order = np.lexsort((draws, offsets), axis=-1)  # by offset, then by draw
    draws = np.take_along_axis(draws, order, -1)
    offsets = np.take_along_axis(offsets, order, -1).astype(np.int64)
    counts = np.ones((nb, n), np.int64)
    spread = mix64(bkey + np.uint64(100))
    rows = np.arange(nb)
    for j in range(extra):
        counts[rows, ((spread >> np.uint64(4 * j)) % np.uint64(n)).astype(np.int64)] += 1
    block_start = tier.start_ms + bs * tier.block_ms
    times = block_start[:, None] + offsets
    steps = (1 + (draws >> np.uint64(32)) % np.uint64(50_000)).astype(np.int64)
    jitter = ((draws >> np.uint64(48)) % np.uint64(32_768)).astype(np.float64) / 32_768 - 0.5
    if tier.block_ms >= HOUR_MS:  # long blocks follow the fair price trade by trade
        fair = path.at(times, 4)
    else:  # shorter ones take it once (a minute's drift is below the jitter)
        fair = path.at(block_start + tier.block_ms // 2, 6)[:, None]
    ticks = np.maximum(1, np.rint(fair * (1 + jitter * 0.0008) * 100)).astype(np.int64)
    agg_ids = (tier.first_agg + ranks * n)[:, None] + np.arange(n, dtype=np.int64)[None, :]
    firsts = (tier.first_trade + ranks * tier.trades)[:, None] + np.cumsum(counts, -1) - counts
    lasts = firsts + counts - 1
    makers = (draws >> np.uint64(63)).astype(np.bool_)
    return Chunk(
        b0,
        starts,
        times.reshape(-1),
        ticks.reshape(-1),
        steps.reshape(-1),
        agg_ids.reshape(-1),
        firsts.reshape(-1),
        lasts.reshape(-1),
        makers.reshape(-1),
    )


class ChunkCache:
    """The market's chunks, least recently used dropped first, at most ``max_trades``."""

    def __init__(self, max_trades: int = 1_000_000) -> None:
        self.max_trades = max_trades
        self.trades = 0
        self._chunks: OrderedDict[tuple[int, int, int, int], Chunk] = OrderedDict()

    def get(self, k: tuple[int, int, int, int], tier: Tier, path: PricePath) -> Chunk:
        """Chunk ``c`` of tier ``ti`` (starting at ``start_ms``) of the symbol whose key
        is ``key``, for ``k = (key, ti, start_ms, c)``."""
        chunk = self._chunks.get(k)
        if chunk is not None:
            self._chunks.move_to_end(k)
            return chunk
        chunk = self._chunks[k] = make_chunk(k[0], k[1], tier, k[3], path)
        self.trades += chunk.size
        while self.trades > self.max_trades and len(self._chunks) > 1:
            _, old = self._chunks.popitem(last=False)
            self.trades -= old.size
        return chunk

    def drop(self, key: int) -> None:
        """Forget a symbol's chunks (delisted)."""
        for k in [k for k in self._chunks if k[0] == key]:
            self.trades -= self._chunks.pop(k).size


def reduce(chunks: list[Chunk], bounds: list[int] | I64) -> tuple[I64, I64]:
    """The trades of the chunks in each ``[bounds[i], bounds[i + 1])`` (sorted bounds; the
    chunks consecutive, so their trades are in time order), reduced in one pass: the
    indices ``i`` of the ranges that hold trades, and for those a ``(11, m)`` matrix of
    open, high, low, close (ticks), volume (steps), notional (ticks x steps), trades,
    taker volume, taker notional, first and last trade id."""
    empty = (np.zeros(0, np.int64), np.zeros((11, 0), np.int64))
    if not chunks:
        return empty
    if len(chunks) == 1:
        ch = chunks[0]
        times, ticks, steps, firsts, lasts, makers = (
            ch.times,
            ch.ticks,
            ch.steps,
            ch.firsts,
            ch.lasts,
            ch.makers,
        )
    else:
        times = np.concatenate([c.times for c in chunks])
        ticks = np.concatenate([c.ticks for c in chunks])
        steps = np.concatenate([c.steps for c in chunks])
        firsts = np.concatenate([c.firsts for c in chunks])
        lasts = np.concatenate([c.lasts for c in chunks])
        makers = np.concatenate([c.makers for c in chunks])
    idx = np.searchsorted(times, np.asarray(bounds, np.int64), "left")
    lo, hi = int(idx[0]), int(idx[-1])
    if hi <= lo:
        return empty
    seg = np.flatnonzero(idx[1:] > idx[:-1])  # the bounds' segments that hold trades
    starts = idx[seg] - lo
    ends = idx[seg + 1] - lo
    ticks, steps = ticks[lo:hi], steps[lo:hi]
    firsts, lasts, makers = firsts[lo:hi], lasts[lo:hi], makers[lo:hi]
    notional = ticks * steps
    taker_steps = np.where(makers, 0, steps)
    taker_notional = np.where(makers, 0, notional)
    out = np.empty((11, len(seg)), np.int64)
    out[0] = ticks[starts]
    out[1] = np.maximum.reduceat(ticks, starts)
    out[2] = np.minimum.reduceat(ticks, starts)
    out[3] = ticks[ends - 1]
    out[4] = np.add.reduceat(steps, starts)
    out[5] = np.add.reduceat(notional, starts)
    out[6] = np.add.reduceat(lasts - firsts + 1, starts)
    out[7] = np.add.reduceat(taker_steps, starts)
    out[8] = np.add.reduceat(taker_notional, starts)
    out[9] = firsts[starts]
    out[10] = lasts[ends - 1]
    return seg, out


def aggregates(seg: I64, reduced: I64, ranges: int) -> list[Agg | None]:
    """``reduce``'s answer as an aggregate (in units, Python ints) per range."""
    out: list[Agg | None] = [None] * ranges
    quote = TICK_UNITS * STEP_UNITS
    for i, (o, h, low, c, v, q, n, tv, tq, f, last) in zip(
        seg.tolist(), reduced.T.tolist(), strict=True
    ):
        out[i] = [
            o * TICK_UNITS,
            h * TICK_UNITS,
            low * TICK_UNITS,
            c * TICK_UNITS,
            v * STEP_UNITS,
            q * quote,
            n,
            tv * STEP_UNITS,
            tq * quote,
            f,
            last,
        ]
    return out
