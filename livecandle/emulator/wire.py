"""Binance's JSON bodies for klines and aggTrades, formatted straight from ints.

The emulator formats its own rows (it is the independent oracle the service's codec is
tested against); a 1,000-row answer is one f-string per row, not a list of strings
encoded by a JSON library, so a backfill's thousands of answers stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable

from livecandle.domain.model import SCALE, Candle, format_quote, format_units
from livecandle.emulator.tape import TradeTuple


def units(x: int) -> str:
    """As ``format_units`` (the common case, not negative, inline)."""
    if x < 0:
        return format_units(x)
    return f"{x // SCALE}.{x % SCALE:08d}"


def kline_row(c: Candle) -> str:
    """Binance's 12-field kline array."""
    return (
        f'[{c.open_ms},"{units(c.open)}","{units(c.high)}","{units(c.low)}",'
        f'"{units(c.close)}","{units(c.volume)}",{c.close_ms},"{format_quote(c.quote_volume)}",'
        f'{c.trades},"{units(c.taker_buy_volume)}","{format_quote(c.taker_buy_quote_volume)}","0"]'
    )


def kline_rows(candles: Iterable[Candle]) -> bytes:
    return ("[" + ",".join(map(kline_row, candles)) + "]").encode()


def agg_trade(t: TradeTuple) -> str:
    """One element of ``/api/v3/aggTrades``."""
    return (
        f'{{"a":{t[0]},"p":"{units(t[1])}","q":"{units(t[2])}","f":{t[3]},"l":{t[4]},'
        f'"T":{t[5]},"m":{"true" if t[6] else "false"},"M":true}}'
    )


def agg_trades(trades: Iterable[TradeTuple]) -> bytes:
    return ("[" + ",".join(map(agg_trade, trades)) + "]").encode()
