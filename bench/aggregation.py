"""Benchmark 1: live aggregation, trades/s, next to peers on the same trades.

Ours: ``LiveCandleBuilder`` (exact integers) with 1 and with all 16 intervals, fed
pre-parsed trades, and again from the raw aggTrade strings (parsing included).
Peers: cryptofeed's ``OHLCV`` aggregate callback (Decimal, one window per instance, so
16 intervals = 16 instances), ccxt's ``build_ohlcvc`` (floats, one timeframe per call)
and a plain pandas resample (floats). Medians of several rounds.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.intervals import INTERVAL_NAMES, INTERVALS
from livecandle.domain.model import Trade, format_units, to_units
from livecandle.domain.sequencer import MAX_HELD, TradeSequencer

N_TRADES = 200_000
ROUNDS = 5
START_MS = 1_717_200_000_000


def make_trades(n: int = N_TRADES, seed: int = 7) -> list[tuple[int, int, int, int, bool]]:
    """(time_ms, price units, qty units, count, buyer_is_maker): ~1000 trades/s of time."""
    rng = random.Random(seed)
    t = START_MS
    price = 60_000 * 10**8
    out = []
    for _ in range(n):
        t += rng.choice((0, 0, 1, 1, 2, 3))
        price += rng.randint(-5, 5) * 10**6
        out.append(
            (t, price, rng.randint(1, 200_000) * 1000, rng.randint(1, 3), rng.random() < 0.5)
        )
    return out


def _timed(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    """Median seconds of ``rounds`` runs."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours(trades: list[tuple[int, int, int, int, bool]], names: list[str]) -> float:
    intervals = [INTERVALS[n] for n in names]

    def run() -> None:
        b = LiveCandleBuilder(intervals)
        add = b.add
        for t in trades:
            add(*t)

    return _timed(run)


def ours_from_strings(raw: list[tuple[int, str, str, int, bool]], names: list[str]) -> float:
    intervals = [INTERVALS[n] for n in names]

    def run() -> None:
        b = LiveCandleBuilder(intervals)
        add = b.add
        for t, p, q, n, m in raw:
            add(t, to_units(p), to_units(q), n, m)

    return _timed(run)


def cryptofeed_ohlcv(raw: list[tuple[int, str, str, int, bool]], windows: int) -> float | None:
    try:
        from cryptofeed.backends.aggregate import OHLCV
        from cryptofeed.types import Trade
    except ImportError:
        return None
    objs = [
        Trade("BINANCE", "BTC-USDT", "sell" if m else "buy", Decimal(q), Decimal(p), t / 1000)
        for t, p, q, _, m in raw
    ]

    async def sink(data: Any) -> None:
        return None

    def run() -> None:
        aggs = [OHLCV(sink, window=60 * (i + 1)) for i in range(windows)]

        async def feed() -> None:
            for tr in objs:
                for a in aggs:
                    await a(tr, tr.timestamp)

        asyncio.run(feed())

    return _timed(run, rounds=3)


def ccxt_build(
    trades: list[tuple[int, int, int, int, bool]], timeframes: list[str]
) -> float | None:
    try:
        import ccxt
    except ImportError:
        return None
    ex = ccxt.binance()
    dicts = [{"timestamp": t, "price": p / 1e8, "amount": q / 1e8} for t, p, q, _, _ in trades]

    def run() -> None:
        for tf in timeframes:
            ex.build_ohlcvc(dicts, tf)

    return _timed(run, rounds=3)


def pandas_resample(
    trades: list[tuple[int, int, int, int, bool]], rules: list[str]
) -> float | None:
    try:
        import pandas as pd
    except ImportError:
        return None
    times = [t for t, *_ in trades]
    prices = [p / 1e8 for _, p, *_ in trades]
    qtys = [q / 1e8 for _, _, q, *_ in trades]

    def run() -> None:
        df = pd.DataFrame(
            {"price": prices, "qty": qtys}, index=pd.to_datetime(times, unit="ms", utc=True)
        )
        for rule in rules:
            df.resample(rule).agg({"price": ["first", "max", "min", "last"], "qty": "sum"})

    return _timed(run, rounds=3)


# pandas/ccxt names of the fixed-length intervals (month/3d/week need calendar rules)
PANDAS_RULES = {
    "1s": "1s",
    "1m": "1min",
    "3m": "3min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "1h",
    "2h": "2h",
    "4h": "4h",
    "6h": "6h",
    "8h": "8h",
    "12h": "12h",
    "1d": "1D",
    "3d": "3D",
    "1w": "W-MON",
    "1M": "MS",
}


HOLE_PAGE = 1_000  # aggTrades a REST page brings


def hole_fill() -> tuple[int, float]:
    """A hole of 100,000 trades filled page by page while 50,000 later ones are held (the
    per-symbol bound): the median seconds ``TradeSequencer.resolve`` takes for a page."""
    seq = TradeSequencer()

    def trade(a: int) -> Trade:
        return Trade(a, 1, 1, a, a, START_MS + a, False)

    seq.offer(trade(1))
    seq.offer(trade(100_001))
    for a in range(100_002, 100_001 + MAX_HELD):
        seq.offer(trade(a))
    held = len(seq.held)
    times = []
    for p in range(50):
        page = [trade(a) for a in range(2 + p * HOLE_PAGE, 2 + (p + 1) * HOLE_PAGE)]
        t0 = time.perf_counter()
        out = seq.resolve(page)
        times.append(time.perf_counter() - t0)
        assert len(out) == HOLE_PAGE
    return held, statistics.median(times)


def run() -> list[dict[str, Any]]:
    trades = make_trades()
    raw = [(t, format_units(p), format_units(q), n, m) for t, p, q, n, m in trades]
    all16 = list(INTERVAL_NAMES)
    rows: list[dict[str, Any]] = []

    def row(name: str, seconds: float | None, peer: str = "", note: str = "") -> None:
        rate = N_TRADES / seconds if seconds else None
        rows.append(
            {
                "bench": "aggregation",
                "name": name,
                "trades_per_s": rate,
                "seconds": seconds,
                "peer": peer,
                "note": note,
            }
        )

    one = ours(trades, ["1m"])
    sixteen = ours(trades, all16)
    row("livecandle 1 interval", one)
    row("livecandle 16 intervals", sixteen, note=f"cost 16/1 = {sixteen / one:.2f}x (goal <= 1.5)")
    row("livecandle 16 intervals, parsing strings", ours_from_strings(raw, all16))
    cf1 = cryptofeed_ohlcv(raw, 1)
    cf16 = cryptofeed_ohlcv(raw[: N_TRADES // 4], 16)
    # cryptofeed gets Decimals already parsed: compare with ours from integers
    row(
        "cryptofeed OHLCV 1 window",
        cf1,
        "cryptofeed",
        f"livecandle (1 interval) is {cf1 / one:.1f}x faster per trade"
        if cf1
        else "cryptofeed not installed",
    )
    row(
        "cryptofeed OHLCV 16 windows",
        cf16 * 4 if cf16 else None,
        "cryptofeed",
        f"Decimal; OHLCV + volume only; livecandle (16) is {cf16 * 4 / sixteen:.0f}x faster"
        if cf16
        else "cryptofeed not installed",
    )
    row("ccxt build_ohlcvc 1 timeframe", ccxt_build(trades, ["1m"]), "ccxt", "floats")
    fixed = [n for n in all16 if n not in ("1M",)]
    row(
        "ccxt build_ohlcvc 15 timeframes",
        ccxt_build(trades, fixed),
        "ccxt",
        "floats; no 1M (calendar) support",
    )
    held, page_s = hole_fill()
    row(
        f"hole fill: a page of {HOLE_PAGE:,} fetched trades, {held:,} held",
        page_s * N_TRADES / HOLE_PAGE,
        note=f"{page_s * 1e3:.2f} ms a page (goal: the page's own cost, << 1 ms, "
        "not the held trades')",
    )
    row("pandas resample 1 rule", pandas_resample(trades, ["1min"]), "pandas", "floats")
    row(
        "pandas resample 16 rules",
        pandas_resample(trades, list(PANDAS_RULES.values())),
        "pandas",
        "floats",
    )
    return rows
