"""Binance's JSON bodies for klines and aggTrades, formatted straight from ints.

The emulator formats its own rows (it is the independent oracle the service's codec is
tested against); a 1,000-row answer is one f-string per row, not a list of strings
encoded by a JSON library, so a backfill's thousands of answers stay cheap.
"""

from __future__ import annotations

from livecandle.domain.model import SCALE, Candle, format_units
from livecandle.emulator.tape import TradeTuple


def units(x: int) -> str:
    """As ``format_units`` (the common case, not negative, inline)."""
    if x < 0:
        return format_units(x)
    return f"{x // SCALE}.{x % SCALE:08d}"


def _quote8(q: int) -> int:
    """A 1e-16 quote amount in 1e-8 units, rounding half to even (``format_quote``)."""
    whole, rest = divmod(q, SCALE)
    if rest * 2 > SCALE or (rest * 2 == SCALE and whole % 2):
        whole += 1
    return whole


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
        q, tq = _quote8(c.quote_volume), _quote8(c.taker_buy_quote_volume)
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
