"""The column-wise fast path of ``aggregate`` equals the row-by-row reference."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from livecandle.archive.aggregate_csv import candles_parallel
from livecandle.archive.trade_csv import (
    CandleAccumulator,
    CsvError,
    accumulate,
    candles_from_file,
    candles_from_rows,
)
from livecandle.domain.intervals import INTERVALS


def csv_rows(n: int, seed: int, micro: bool, invalid_every: int = 0) -> bytes:
    rng = random.Random(seed)
    t = 1_735_689_540_000
    out = []
    tid = 0
    for a in range(n):
        t += rng.choice((0, 3, 250, 4000, 70_000))
        price = rng.randint(1, 10**7)
        qty = rng.randint(1, 10**8)
        k = rng.randint(1, 3)
        ts = t * 1000 + rng.randint(0, 999) if micro else t
        f, last = (tid, tid + k - 1)
        if invalid_every and a % invalid_every == 5:
            out.append(f"{a},0.00000000,0.00000000,-1,-1,{ts},True,True")
            continue
        out.append(
            f"{a},{price // 10**8}.{price % 10**8:08d},{qty // 10**8}."
            f"{qty % 10**8:08d},{f},{last},{ts},{rng.choice(['True', 'False'])},True"
        )
        tid += k
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize(
    ("micro", "invalid_every", "interval"),
    [(False, 0, "1m"), (True, 0, "1m"), (False, 97, "5m"), (True, 0, "1h"), (False, 0, "1M")],
)
def test_fast_path_equals_the_row_by_row_reference(
    micro: bool, invalid_every: int, interval: str
) -> None:
    data = csv_rows(5000, seed=4, micro=micro, invalid_every=invalid_every)
    i = INTERVALS[interval]
    slow = list(candles_from_rows(data.splitlines(keepends=True), i))
    for block in (257, 4096, 1 << 22):  # many blocks, and one
        acc = CandleAccumulator(i)
        fast = list(accumulate(io.BytesIO(data), acc, block_bytes=block))
        assert fast == slow
        assert acc.micro is micro
    assert len(slow) >= 2


def test_a_header_row_and_crlf_lines_are_accepted() -> None:
    data = csv_rows(300, seed=5, micro=False)
    header = (
        b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
        b"is_buyer_maker,is_best_match\n"
    )
    ref = list(candles_from_rows(data.splitlines(keepends=True), INTERVALS["1m"]))
    got = list(
        candles_from_file(
            io.BytesIO(header + data.replace(b"\n", b"\r\n")), INTERVALS["1m"], block_bytes=1000
        )
    )
    assert got == ref


def test_errors_name_the_line_whichever_block_it_is_in() -> None:
    data = csv_rows(3000, seed=6, micro=False).splitlines(keepends=True)

    def with_price(i: int, price: bytes) -> bytes:
        cells = data[i].split(b",")
        cells[1] = price
        return b",".join(cells)

    data[2222] = with_price(2222, b"12.5")  # one decimal: unusual but valid (slow path)
    data[2500] = with_price(2500, b"oops")
    with pytest.raises(CsvError, match="line 2501"):
        list(candles_from_file(io.BytesIO(b"".join(data)), INTERVALS["1m"], block_bytes=4096))


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_parallel_parts_stitch_into_the_same_candles(tmp_path: Path, workers: int) -> None:
    data = csv_rows(20_000, seed=8, micro=True)
    src = tmp_path / "trades.csv"
    src.write_bytes(data)
    for name in ("1m", "1h"):
        ref = list(candles_from_rows(data.splitlines(keepends=True), INTERVALS[name]))
        assert candles_parallel(str(src), INTERVALS[name], workers) == (ref, True)


def test_parallel_errors_name_the_line_of_the_whole_file(tmp_path: Path) -> None:
    lines = csv_rows(20_000, seed=9, micro=False).splitlines(keepends=True)
    cells = lines[17_000].split(b",")
    cells[2] = b"1.5e3"
    lines[17_000] = b",".join(cells)
    src = tmp_path / "trades.csv"
    src.write_bytes(b"".join(lines))
    with pytest.raises(CsvError, match="line 17001"):
        candles_parallel(str(src), INTERVALS["1m"], 4)
