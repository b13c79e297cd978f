"""Binance's JSON bodies for klines and aggTrades, formatted straight from ints.

The emulator formats its own rows (it is the independent oracle the service's codec is
tested against), not through a JSON library. A klines answer (``klines_body``) is made
with numpy from the table's columns: every value's decimal digits four at a time from a
table (leading zeros as a byte no JSON text holds), the row's pieces gathered by one index
and the leading zeros deleted by one ``bytes.translate``,
so that a 1,000-row answer costs a few dozen array operations, not 19,000 conversions of
an int to text (a single ``%`` over them took ~3 ms). ``kline_rows`` is the per-row
formatter it is tested against.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from livecandle.domain.model import SCALE, Candle, format_units
from livecandle.emulator.history import I64
from livecandle.emulator.kline_table import KlineTable
from livecandle.emulator.tape import TradeTuple, quote8


def units(x: int) -> str:
    """As ``format_units`` (the common case, not negative, inline)."""
    if x < 0:
        return format_units(x)
    return f"{x // SCALE}.{x % SCALE:08d}"


_ROW = (
    '[%d,"%d.%08d","%d.%08d","%d.%08d","%d.%08d","%d.%08d",%d,"%d.%08d",%d,"%d.%08d","%d.%08d","0"]'
)
_AGG = '{"a":%d,"p":"%d.%08d","q":"%d.%08d","f":%d,"l":%d,"T":%d,"m":%s,"M":true}'


def kline_rows(candles: list[Candle]) -> bytes:
    """Binance's klines body: 12-field arrays, the amounts with 8 decimals (the emulator's
    amounts are never negative). One ``%`` over every row: no call per value."""
    s = SCALE
    values: list[int] = []
    put = values.extend
    for c in candles:
        q, tq = quote8(c.quote_volume), quote8(c.taker_buy_quote_volume)
        put(
            (
                c.open_ms,
                c.open // s,
                c.open % s,
                c.high // s,
                c.high % s,
                c.low // s,
                c.low % s,
                c.close // s,
                c.close % s,
                c.volume // s,
                c.volume % s,
                c.close_ms,
                q // s,
                q % s,
                c.trades,
                c.taker_buy_volume // s,
                c.taker_buy_volume % s,
                tq // s,
                tq % s,
            )
        )
    return ("[" + ",".join([_ROW] * len(candles)) % tuple(values) + "]").encode()


def agg_trades(trades: list[TradeTuple]) -> bytes:
    """Binance's aggTrades body (as ``kline_rows``: one ``%`` over every trade)."""
    s = SCALE
    values: list[int | str] = []
    put = values.extend
    for t in trades:
        put((t[0], t[1] // s, t[1] % s, t[2] // s, t[2] % s, t[3], t[4], t[5]))
        values.append("true" if t[6] else "false")
    return ("[" + ",".join([_AGG] * len(trades)) % tuple(values) + "]").encode()


# ---- numpy formatting ---------------------------------------------------------------

# a leading zero: deleted from the formatted rows (no JSON text holds the byte)
_ZERO = b"\xff"
# every four-digit group: as is (0 ..), as a value's first (_LEAD ..: its zeros leading),
# and a group above a value's first digit (_BLANK)
_LEAD = 10_000
_BLANK = 2 * _LEAD
_GROUPS = np.frombuffer(
    b"".join(b"%04d" % i for i in range(_LEAD))
    + b"".join((b"%4d" % i).replace(b" ", _ZERO) for i in range(_LEAD))
    + _ZERO * 4,
    np.uint32,
)


class Layout:
    """A row template of ``%d`` (a non-negative int) and ``%08d`` fields between literal
    text, formatted for many rows at once (``format``)."""

    def __init__(self, template: str) -> None:
        parts = re.split("(%d|%08d)", template)
        self.literals = parts[0::2]
        self.fixed = np.array([p == "%08d" for p in parts[1::2]], np.bool_)
        self.text = np.frombuffer("".join(self.literals).encode(), np.uint8)
        self._plans: dict[tuple[int, ...], npt.NDArray[np.intp]] = {}

    def _plan(self, limbs: int, widths: tuple[int, ...]) -> npt.NDArray[np.intp]:
        """For fields of ``widths`` digits, each made as ``limbs`` four-digit groups:
        which byte of (every field's digits, then the literal text) each byte of a row is."""
        key = (limbs, *widths)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        k, size = len(widths), limbs * 4
        index: list[int] = []
        at = k * size
        for f, lit in enumerate(self.literals):
            index += range(at, at + len(lit))
            at += len(lit)
            if f == k:
                break
            index += range(f * size + size - widths[f], (f + 1) * size)
        plan = self._plans[key] = np.array(index, np.intp)
        return plan

    def format(self, values: I64) -> bytes:
        """The rows of ``values`` (``(n, fields)``, non-negative), one after another."""
        n, k = values.shape
        if not n:
            return b""
        # a column is as wide as its largest value; each value's digits are four-digit
        # groups, its leading zeros a byte no text holds, deleted at the end by one
        # ``bytes.translate`` (a mask and a compress over every byte cost twice as much)
        widths = [
            8 if f else len(str(int(m))) for f, m in zip(self.fixed, values.max(0), strict=True)
        ]
        nl = -(-max(widths) // 4)  # four-digit groups per value
        r: npt.NDArray[np.integer] = values
        if nl <= 2:  # below 1e8: 32-bit arithmetic is cheaper
            r = values.astype(np.int32)
        limbs = []
        for j in range(nl - 1, -1, -1):
            limbs.append(r % 10_000)
            if j:
                r = r // 10_000
        # a group above a value's first digit: blank; its first group: without zeros
        codes = np.empty((n, k, nl), np.uint16)
        leading = np.broadcast_to(~self.fixed, (n, k))
        for j, limb in enumerate(reversed(limbs)):
            code = codes[:, :, j]
            np.add(limb, leading * np.uint16(_LEAD), out=code, casting="unsafe")
            if j < nl - 1:
                leading = leading & (limb == 0)
                code[leading] = _BLANK
        size = nl * 4
        full = np.empty((n, k * size + len(self.text)), np.uint8)
        full[:, : k * size] = _GROUPS[codes].view(np.uint8).reshape(n, k * size)
        full[:, k * size :] = self.text
        return np.take(full, self._plan(nl, tuple(widths)), 1).tobytes().translate(None, _ZERO)


# a klines row, the times split in two below 1e8 (as "%d%08d": they are past 1e8)
_KLINE = Layout(
    ',[%d%08d,"%d.%08d","%d.%08d","%d.%08d","%d.%08d","%d.%08d",%d%08d,"%d.%08d",%d,'
    '"%d.%08d","%d.%08d","0"]'
)
# the table's columns in the order of the row's fields: times and amounts split in two
_SPLIT = [0, 2, 3, 4, 5, 6, 1, 7, 9, 10]
_HIGH = [0, 2, 4, 6, 8, 10, 12, 14, 17, 19]  # the row's fields of their whole parts
_LOW = [1, 3, 5, 7, 9, 11, 13, 15, 18, 20]  # and of the 8 digits below
_TRADES = 16


def klines_body(table: KlineTable) -> bytes:
    """``kline_rows`` of a whole table at once."""
    m = table.rows
    n = m.shape[1]
    if not n:
        return b"[]"
    if int(m.min()) < 0 or int(m[0].min()) < SCALE:  # not the market's: the per-row way
        return kline_rows([Candle(*r) for r in _candle_values(table)])
    values = np.empty((n, 21), np.int64)
    split = m[_SPLIT]
    values[:, _HIGH] = (split // SCALE).T
    values[:, _LOW] = (split % SCALE).T
    values[:, _TRADES] = m[8]
    return b"[" + _KLINE.format(values)[1:] + b"]"


def _candle_values(table: KlineTable) -> list[list[int]]:
    """Rows as ``Candle`` fields (quotes back in 1e-16 units)."""
    out = []
    for r in table.rows.T.tolist():
        r[7] *= SCALE
        r[10] *= SCALE
        out.append(r)
    return out
