"""Benchmark 5: ``livecandle aggregate`` on a generated 10-million-row aggTrades CSV
(data.binance.vision format), next to a pandas read_csv + resample of the same file.

Both produce 1m candles; ours is exact (integer units) and is checked against pandas'
OHLC on the same file (prices agree; pandas' float volumes differ in the last digits).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROWS = int(os.environ.get("BENCH_BATCH_ROWS", "10000000"))
START_MS = 1_735_689_600_000  # 2025-01-01: the archive's µs era


def generate(path: Path, rows: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    t_us = START_MS * 1000
    price = 9_000_000  # 90000.00 in cents
    trade_id = 0
    chunk: list[str] = []
    with path.open("w") as f:
        for a in range(rows):
            t_us += rng.choice((0, 150, 900, 2500, 9000))
            price += rng.randint(-3, 3)
            n = 1 if rng.random() < 0.7 else rng.randint(2, 4)
            qty = rng.randint(1, 200_000)
            chunk.append(
                f"{a},{price // 100}.{price % 100:02d}000000,{qty // 100_000}."
                f"{qty % 100_000:05d}000,{trade_id},{trade_id + n - 1},{t_us},"
                f"{'True' if rng.random() < 0.5 else 'False'},True\n"
            )
            trade_id += n
            if len(chunk) >= 100_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))


def time_ours(src: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "livecandle",
            "aggregate",
            "--interval",
            "1m",
            "-o",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


PANDAS = r"""
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1], header=None, usecols=[1, 2, 5],
                 names=["id", "price", "qty", "f", "l", "ts", "m", "b"])
df.index = pd.to_datetime(df["ts"], unit="us", utc=True)
r = df.resample("1min").agg({"price": ["first", "max", "min", "last"], "qty": "sum"})
r.to_csv(sys.argv[2], header=False)
"""

# the same nine figures livecandle computes (in floats: not exact)
PANDAS_SAME = r"""
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1], header=None, usecols=[1, 2, 3, 4, 5, 6],
                 names=["id", "price", "qty", "f", "l", "ts", "m", "b"])
df.index = pd.to_datetime(df["ts"], unit="us", utc=True)
taker = ~df["m"].astype(bool)
df["quote"] = df["price"] * df["qty"]
df["trades"] = df["l"] - df["f"] + 1
df["taker_qty"] = df["qty"].where(taker, 0.0)
df["taker_quote"] = df["quote"].where(taker, 0.0)
r = df.resample("1min").agg({"price": ["first", "max", "min", "last"], "qty": "sum",
                             "quote": "sum", "trades": "sum", "taker_qty": "sum",
                             "taker_quote": "sum"})
r.to_csv(sys.argv[2], header=False)
"""


def time_script(script: str, src: Path, out: Path) -> float | None:
    """Wall time of a whole pandas run (interpreter, import, parse, resample, write),
    measured as ours is."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return None
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", script, str(src), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started


def same_prices(ours: Path, theirs: Path) -> bool:
    """Our OHLC equals pandas' on every minute that has trades."""
    mine = {}
    for line in ours.read_text().splitlines():
        c = line.split(",")
        if c[8] != "0":
            mine[int(c[0]) // 1000] = [float(x) for x in c[1:5]]
    for line in theirs.read_text().splitlines():
        c = line.split(",")
        if not c[1]:
            continue
        import datetime as dt

        ms = int(dt.datetime.fromisoformat(c[0]).timestamp() * 1000)
        if [float(x) for x in c[1:5]] != mine.get(ms):
            return False
    return True


def median_or_none(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got and len(got) == len(values) else None


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="lc-bench-batch-") as tmp:
        src = Path(tmp) / "aggTrades.csv"
        t0 = time.perf_counter()
        generate(src, ROWS)
        gen_s = time.perf_counter() - t0
        size_mb = src.stat().st_size / 1e6
        # one untimed run each first: the page cache holds the file for every timed run
        time_ours(src, Path(tmp) / "ours.csv")
        time_script(PANDAS_SAME, src, Path(tmp) / "same.csv")
        ours_s = statistics.median(time_ours(src, Path(tmp) / "ours.csv") for _ in range(3))
        pandas_s = median_or_none(
            [time_script(PANDAS, src, Path(tmp) / "pandas.csv") for _ in range(3)]
        )
        same_s = median_or_none(
            [time_script(PANDAS_SAME, src, Path(tmp) / "same.csv") for _ in range(3)]
        )
        agree = (
            same_prices(Path(tmp) / "ours.csv", Path(tmp) / "pandas.csv")
            if pandas_s is not None
            else None
        )
    rows = [
        {
            "bench": "batch",
            "name": "livecandle aggregate (exact, 9 figures)",
            "rows": ROWS,
            "rows_per_s": ROWS / ours_s,
            "seconds": ours_s,
            "note": f"{size_mb:.0f} MB CSV, generated in {gen_s:.0f} s; goal >= 1,000,000 rows/s",
        },
        {
            "bench": "batch",
            "name": "pandas, the same 9 figures (floats)",
            "rows": ROWS,
            "rows_per_s": ROWS / same_s if same_s else None,
            "seconds": same_s,
            "note": f"livecandle is {same_s / ours_s:.2f}x its speed" if same_s else "no pandas",
        },
        {
            "bench": "batch",
            "name": "pandas, OHLC + volume only (3 columns, floats)",
            "rows": ROWS,
            "rows_per_s": ROWS / pandas_s if pandas_s else None,
            "seconds": pandas_s,
            "note": (
                f"livecandle is {pandas_s / ours_s:.2f}x its speed; same OHLC: {agree}"
                if pandas_s
                else "pandas not installed"
            ),
        },
    ]
    return rows
