"""Builders of Binance-shaped test data that several test files use.

- ``kline_row`` / ``kline_member``: a kline as Binance's 12-field row, and as the compact
  JSON member the store keeps (written out field by field, independent of livecandle's codec);
- ``agg_trades_csv``: aggTrades (``/api/v3/aggTrades`` dicts) as data.binance.vision's
  archive CSV rows;
- ``reference_kline``: the kline of some aggTrades by Binance's rules, written independently
  with ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

MINUTE_MS = 60_000


def kline_row(
    open_ms: int,
    close: str = "100.00000000",
    *,
    open: str = "100.00000000",
    high: str = "101.00000000",
    low: str = "99.00000000",
    volume: str = "1.00000000",
    close_ms: int | None = None,
    quote_volume: str = "100.00000000",
    trades: int = 5,
    taker_buy_volume: str = "0.50000000",
    taker_buy_quote_volume: str = "50.00000000",
) -> list[Any]:
    """A 1m kline in ``/api/v3/klines`` order; every field can be set by name."""
    return [
        open_ms,
        open,
        high,
        low,
        close,
        volume,
        open_ms + MINUTE_MS - 1 if close_ms is None else close_ms,
        quote_volume,
        trades,
        taker_buy_volume,
        taker_buy_quote_volume,
        "0",
    ]


def kline_member(open_ms: int, close: str = "100.00000000", **fields: Any) -> bytes:
    """``kline_row`` as the store's member: compact JSON, exactly as Binance sends it."""
    return msgspec.json.encode(kline_row(open_ms, close, **fields))


def flat_kline_member(open_ms: int, price: str) -> bytes:
    """A 1m kline of one unit traded at ``price``: open = high = low = close = quote volume."""
    return kline_member(open_ms, price, open=price, high=price, low=price, quote_volume=price)


def agg_trades_csv(trades: Iterable[Mapping[str, Any]], micro: bool = False) -> str:
    """Archive aggTrades CSV (``a,p,q,f,l,T,m,M``, no header); ``micro``: times in µs, as
    data.binance.vision writes spot files since 2025."""
    return "".join(
        f"{t['a']},{t['p']},{t['q']},{t['f']},{t['l']},{int(t['T']) * (1000 if micro else 1)},"
        f"{'True' if t['m'] else 'False'},True\n"
        for t in trades
    )


def reference_kline(trades: list[Mapping[str, Any]], open_ms: int, close_ms: int) -> list[Any]:
    """The kline of ``trades`` (aggTrade dicts, in order) by Binance's rules."""
    p = [Decimal(str(t["p"])) for t in trades]
    q = [Decimal(str(t["q"])) for t in trades]
    taker = [not t["m"] for t in trades]

    def fmt(d: Decimal) -> str:
        return f"{d:.8f}"

    return [
        open_ms,
        fmt(p[0]),
        fmt(max(p)),
        fmt(min(p)),
        fmt(p[-1]),
        fmt(sum(q, Decimal(0))),
        close_ms,
        fmt(sum((a * b for a, b in zip(p, q, strict=True)), Decimal(0))),
        sum(int(t["l"]) - int(t["f"]) + 1 for t in trades),
        fmt(sum((b for b, k in zip(q, taker, strict=True) if k), Decimal(0))),
        fmt(sum((a * b for a, b, k in zip(p, q, taker, strict=True) if k), Decimal(0))),
        "0",
    ]
