"""The column-wise parser of regular aggTrades CSV blocks (numpy, exact).

A block whose rows all have Binance's regular shape is parsed column by column: int64
digits, exact; price x quantity summed from 21-bit limbs so nothing overflows; aggregated
per candle with ``reduceat`` (no Python work per row). ``_columns_np`` answers 0 for any
other block, which the row-by-row parser in ``trade_csv`` then reads.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from livecandle.archive.accumulator import CandleAccumulator
from livecandle.domain.model import Candle
from livecandle.domain.ohlcv import Ohlcv

_POW10 = np.array([10**i for i in range(19)], dtype=np.int64)
_LIMB = 1 << 21  # products of 21-bit limbs summed over a block stay far below 2**63
# weights of the 19 right-aligned characters of "dddddddddd.dddddddd" (the "." weighs 0)
_AMOUNT_WEIGHTS = np.array(
    [10 ** (8 + 9 - i) for i in range(10)] + [0] + [10 ** (7 - i) for i in range(8)], dtype=np.int64
)
_TRUE32 = int(np.frombuffer(b"True", dtype=np.uint32)[0])
_FALS32 = int(np.frombuffer(b"Fals", dtype=np.uint32)[0])


def _np_uint(arr: np.ndarray, s: np.ndarray, e: np.ndarray, maxw: int) -> np.ndarray | None:
    """The unsigned decimal integers in ``arr[s:e]`` for each pair, or None if any field
    is empty, too long or not all ASCII digits."""
    w = e - s
    if len(w) == 0:
        return None
    width, narrowest = int(w.max()), int(w.min())
    if narrowest < 1 or width > maxw or int(e[0]) < width:
        return None
    # each field's last `width` bytes, right-aligned: one gather of rows of a window view
    digits = sliding_window_view(arr, width)[e - width] - np.uint8(48)
    if narrowest != width:
        digits[np.arange(width) < (width - w)[:, None]] = 0  # bytes before the field
    if int(digits.max()) > 9:  # uint8: anything below "0" wrapped high
        return None
    result: np.ndarray = digits.astype(np.int64) @ _POW10[width - 1 :: -1]
    return result


def _np_amount(arr: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray | None:
    """``digits.8digits`` fields as 1e-8 units (exact), or None: one gather of each
    field's bytes, the "." column weighed zero."""
    w = e - s
    if len(w) == 0:
        return None
    width, narrowest = int(w.max()), int(w.min())
    if narrowest < 10 or width > 19 or int(e[0]) < width:
        return None  # at least one digit, ".", 8 decimals; at most 10 digits before it
    chars = sliding_window_view(arr, width)[e - width]
    if not bool((chars[:, width - 9] == 46).all()):
        return None
    digits = chars - np.uint8(48)
    digits[:, width - 9] = 0
    if narrowest != width:
        digits[np.arange(width) < (width - w)[:, None]] = 0  # bytes before the field
    if int(digits.max()) > 9:  # uint8: anything below "0" wrapped high
        return None
    result: np.ndarray = digits.astype(np.int64) @ _AMOUNT_WEIGHTS[19 - width :]
    return result


def _limbs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return x % _LIMB, (x // _LIMB) % _LIMB, x // (_LIMB * _LIMB)


def _np_quotes(
    p: np.ndarray, q: np.ndarray, taker: np.ndarray, seg: np.ndarray
) -> tuple[list[int], list[int]]:
    """Exact sums of price x quantity per segment, all trades and taker trades only,
    from 21-bit limbs so that every partial product and sum fits in int64."""
    a, b = _limbs(p), _limbs(q)
    degrees = [
        a[0] * b[0],
        a[0] * b[1] + a[1] * b[0],
        a[0] * b[2] + a[1] * b[1] + a[2] * b[0],
        a[1] * b[2] + a[2] * b[1],
        a[2] * b[2],
    ]
    out = []
    for mask in (None, taker):
        sums = [np.add.reduceat(d if mask is None else d * mask, seg).tolist() for d in degrees]
        out.append([sum(int(sums[k][i]) * _LIMB**k for k in range(5)) for i in range(len(seg))])
    return out[0], out[1]


def _aggregate_np(
    acc: CandleAccumulator,
    out: list[Candle],
    n: int,
    p: np.ndarray,
    q: np.ndarray,
    f: np.ndarray,
    last: np.ndarray,
    is_false: np.ndarray,
    tb: np.ndarray,
    div: int,
) -> bool:
    """Per-candle sums of a parsed block whose times ``tb`` are equal-width digit
    strings (``div`` 1000 for microseconds)."""
    if acc.micro is None:
        acc.micro = div == 1000
    t0, t1 = int(tb[0]) // div, int(tb[-1]) // div
    if (acc.last_ts is not None and t0 < acc.last_ts) or not bool((tb[1:] >= tb[:-1]).all()):
        return False  # out of order somewhere: the row parser says where
    interval = acc.interval
    width = tb.dtype.itemsize
    bounds = []
    o = interval.next_open(interval.open_of(t0))
    while o <= t1:
        bounds.append(str(o * div).zfill(width).encode())
        o = interval.next_open(o)
    cut = np.searchsorted(tb, np.array(bounds, dtype=tb.dtype)) if bounds else np.zeros(0, int)
    seg = np.unique(np.concatenate(([0], cut)))
    seg = seg[seg < n]
    first_times = [int(x) // div for x in tb[seg].tolist()]
    _emit_segments(acc, out, n, p, q, f, last, is_false, seg, first_times)
    if acc.first_ts is None:
        acc.first_ts = t0
    acc.last_ts = t1
    return True


def _emit_segments(
    acc: CandleAccumulator,
    out: list[Candle],
    n: int,
    p: np.ndarray,
    q: np.ndarray,
    f: np.ndarray,
    last: np.ndarray,
    is_false: np.ndarray,
    seg: np.ndarray,
    first_times: list[int],
) -> None:
    taker = is_false.astype(np.int64)
    qt = q * taker
    quote, taker_quote = _np_quotes(p, q, taker, seg)
    seg_end = np.append(seg[1:], n)
    opens = p[seg].tolist()
    closes = p[seg_end - 1].tolist()
    highs = np.maximum.reduceat(p, seg).tolist()
    lows = np.minimum.reduceat(p, seg).tolist()
    vols = np.add.reduceat(q, seg).tolist()
    trades = np.add.reduceat(last - f + 1, seg).tolist()
    taker_vols = np.add.reduceat(qt, seg).tolist()
    for i in range(len(seg)):
        acc.add_part(
            first_times[i],
            Ohlcv(
                opens[i],
                highs[i],
                lows[i],
                closes[i],
                vols[i],
                quote[i],
                trades[i],
                taker_vols[i],
                taker_quote[i],
            ),
            out,
        )


def _columns_np(acc: CandleAccumulator, block: bytes, out: list[Candle]) -> int:
    """The vectorised fast path (numpy, exact integers): the number of rows consumed, or
    0 when the block has any irregular row (a "\\r", a header, a "-1" id, an odd number:
    nothing consumed then, the row parser handles it)."""
    arr = np.frombuffer(block, dtype=np.uint8)
    # "," is 44 and "\n" 10; nothing else in a regular row is <= 44 (a "-", a space or a
    # control character makes the field count wrong, and the row parser takes the block)
    seps = np.flatnonzero(arr <= 44)
    n = (len(seps) + 1) // 8
    if n == 0 or len(seps) != 8 * n - 1:
        return 0
    newline = arr[seps] == 10
    if int(newline.sum()) != n - 1 or not bool(newline[7::8].all()):
        return 0  # 8 fields on every line
    ends = np.append(seps, len(arr)).astype(np.int64)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    p = _np_amount(arr, starts[1::8], ends[1::8])
    q = _np_amount(arr, starts[2::8], ends[2::8])
    f = _np_uint(arr, starts[3::8], ends[3::8], 18)
    last = _np_uint(arr, starts[4::8], ends[4::8], 18)
    if p is None or q is None or f is None or last is None:
        return 0  # e.g. "-1" ids of invalid aggTrades, other number shapes
    ms, w = starts[6::8], ends[6::8] - starts[6::8]
    if int(ms[-1]) + 4 > len(arr):
        return 0
    head = sliding_window_view(arr, 4)[ms].view(np.uint32).ravel()  # first 4 letters
    is_true = (w == 4) & (head == _TRUE32)
    is_false = (w == 5) & (head == _FALS32) & (arr[np.minimum(ms + 4, len(arr) - 1)] == 101)
    if not bool((is_true | is_false).all()):
        return 0
    if bool(((p == 0) & (q == 0)).any()):
        return 0  # invalid aggTrades to skip: row by row
    if int(q.max()) >= (1 << 62) // n:
        return 0  # sums could overflow 64 bits: exact Python ints instead
    ts_s, ts_e = starts[5::8], ends[5::8]
    ts_w = ts_e - ts_s
    width = int(ts_w[0])
    if width in (13, 16) and bool((ts_w == width).all()):
        # one width (the usual case): the digits compare as byte strings, so only the few
        # times that matter (candle edges, the ends of the block) become integers
        digits = sliding_window_view(arr, width)[ts_s]
        if int((digits - 48).max()) > 9:  # uint8: anything below "0" wraps high
            return 0
        times = digits.view(f"S{width}").ravel()
        return n * _aggregate_np(
            acc, out, n, p, q, f, last, is_false, times, 1000 if width == 16 else 1
        )
    t = _np_uint(arr, ts_s, ts_e, 16)
    if t is None:
        return 0
    if bool((t >= 10**15).any()):
        if acc.micro is None:
            acc.micro = bool(t[0] >= 10**15)
        t = np.where(t >= 10**15, t // 1000, t)
    elif acc.micro is None:
        acc.micro = False
    if (acc.last_ts is not None and int(t[0]) < acc.last_ts) or not bool((t[1:] >= t[:-1]).all()):
        return 0  # out of order somewhere: the row parser says where
    interval = acc.interval
    t0, t1 = int(t[0]), int(t[-1])
    bounds = []
    o = interval.next_open(interval.open_of(t0))
    while o <= t1:
        bounds.append(o)
        o = interval.next_open(o)
    cut = np.searchsorted(t, np.array(bounds, dtype=np.int64)) if bounds else np.zeros(0, int)
    seg = np.unique(np.concatenate(([0], cut)))
    seg = seg[seg < n]
    _emit_segments(acc, out, n, p, q, f, last, is_false, seg, t[seg].tolist())
    if acc.first_ts is None:
        acc.first_ts = t0
    acc.last_ts = t1
    return n
