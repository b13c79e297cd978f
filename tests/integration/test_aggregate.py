"""``livecandle aggregate``: archive aggTrades CSV -> klines CSV, exact."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.builders import agg_trades_csv, reference_kline
from tests.helpers import FIXTURES, SHARED_FIXTURES, EmulatorProcess


def aggregate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livecandle", "aggregate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("micro", [False, True])
def test_an_emulated_day_reproduces_the_official_klines(
    emulator: EmulatorProcess, tmp_path: Path, micro: bool
) -> None:
    state = emulator.state()["symbols"]["BTCUSDT"]
    day = (state["live_start_ms"] // 86_400_000 - 2) * 86_400_000  # a day of 1-min blocks
    trades: list[dict[str, object]] = []
    t = day
    with httpx.Client(base_url=emulator.rest_url) as client:
        while t < day + 86_400_000:
            page = client.get(
                "/api/v3/aggTrades",
                params={
                    "symbol": "BTCUSDT",
                    "startTime": t,
                    "endTime": min(t + 3_599_999, day + 86_399_999),
                    "limit": 1000,
                },
            ).json()
            trades.extend(page)
            t = page[-1]["T"] + 1 if len(page) == 1000 else t + 3_600_000
        official = {
            i: client.get(
                "/api/v3/klines",
                params={
                    "symbol": "BTCUSDT",
                    "interval": i,
                    "startTime": day,
                    "endTime": day + 86_399_999,
                    "limit": 1000,
                },
            ).json()
            for i in ("5m", "1h", "1d")
        }
    src = tmp_path / "BTCUSDT-aggTrades.csv"
    src.write_text(agg_trades_csv(trades, micro))
    for interval, rows in official.items():
        out = tmp_path / f"{interval}.csv"
        r = aggregate("--interval", interval, "-o", str(out), str(src))
        assert r.returncode == 0, r.stderr
        got = list(csv.reader(out.read_text().splitlines()))
        mult = 1000 if micro else 1
        expected = [
            [str(x[0] * mult), *x[1:6], str((x[6] + 1) * mult - 1), x[7], str(x[8]), *x[9:]]
            for x in rows
        ]
        assert got == expected, interval


@pytest.mark.parametrize("micro", [False, True])
def test_the_agg_trades_of_the_forming_minute_aggregate_to_its_kline(
    tmp_path: Path, micro: bool
) -> None:
    trades = json.loads((FIXTURES / "agg_trades_SOLUSDT.json").read_text())
    forming = json.loads((FIXTURES / "klines_SOLUSDT_1m.json").read_text())[-1]
    src = tmp_path / "SOLUSDT-aggTrades.csv"
    src.write_text(agg_trades_csv(trades, micro))
    r = aggregate("--interval", "1m", str(src))
    assert r.returncode == 0, r.stderr
    [row] = list(csv.reader(r.stdout.splitlines()))
    mult = 1000 if micro else 1
    assert row == [
        str(forming[0] * mult),
        *forming[1:6],
        str((forming[6] + 1) * mult - 1),
        forming[7],
        str(forming[8]),
        *forming[9:],
    ]


# An extra check on the real recordings, defined only where ../shared is beside the clone:
# a stranger's clone runs every test it collects and skips none.
if SHARED_FIXTURES.is_dir():

    def test_the_recorded_agg_trades_aggregate_exactly_inside_their_recorded_kline(
        tmp_path: Path,
    ) -> None:
        trades = json.loads((SHARED_FIXTURES / "spot_market_agg_trades.json").read_text())
        src = tmp_path / "recorded.csv"
        src.write_text(agg_trades_csv(trades))
        r = aggregate("--interval", "1m", str(src))
        assert r.returncode == 0, r.stderr
        [row] = list(csv.reader(r.stdout.splitlines()))
        assert row == [str(x) for x in reference_kline(trades, 1634944080000, 1634944139999)]
        # these 10 trades are part of the official 23:08 kline of the recorded klines
        kl = json.loads((SHARED_FIXTURES / "http_spot_market_klines.json").read_text())
        official = next(k for k in kl if k[0] == 1634944080000)
        p = [Decimal(t["p"]) for t in trades]
        assert Decimal(official[3]) <= min(p) and max(p) <= Decimal(official[2])
        assert Decimal(row[5]) <= Decimal(official[5]) and int(row[8]) <= official[8]


def test_a_broken_row_names_its_line_and_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "broken.csv"
    src.write_text(
        "1,10.00000000,1.00000000,1,1,1700000000000,True,True\n"
        "2,10.50000000,oops,2,2,1700000001000,False,True\n"
    )
    out = tmp_path / "out.csv"
    r = aggregate("--interval", "1m", "-o", str(out), str(src))
    assert r.returncode != 0
    assert "line 2" in r.stderr and "oops" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not (tmp_path / "out.csv.partial").exists()
    underscore = tmp_path / "underscore.csv"
    underscore.write_text("1,1_0.00000000,1.00000000,1,1,1700000000000,True,True\n")
    r = aggregate("--interval", "1m", str(underscore))
    assert r.returncode != 0 and "line 1" in r.stderr
    backwards = tmp_path / "backwards.csv"
    backwards.write_text(
        "1,10.00000000,1.00000000,1,1,1700000005000,True,True\n"
        "2,10.00000000,1.00000000,2,2,1700000001000,True,True\n"
    )
    r = aggregate("--interval", "1m", str(backwards))
    assert r.returncode != 0 and "line 2" in r.stderr and "before" in r.stderr


def test_millisecond_and_microsecond_rows_are_detected_per_row(tmp_path: Path) -> None:
    src = tmp_path / "mixed.csv"
    src.write_text(
        "1,10.00000000,1.00000000,1,1,1735689599000,True,True\n"
        "2,11.00000000,2.00000000,2,3,1735689599500000,False,True\n"
    )
    r = aggregate("--interval", "1m", str(src))
    assert r.returncode == 0, r.stderr
    [row] = list(csv.reader(r.stdout.splitlines()))
    assert row[0] == "1735689540000" and row[4] == "11.00000000" and row[8] == "3"
