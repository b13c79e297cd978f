"""Benchmark 9: hostile and slow clients (issue 13). Runs the attacks of
``tests/integration/test_hostile_clients.py`` against a real ``serve --role web`` process
(each from its own address while a normal client, a process of its own, reads
``/api/klines`` of 1,000 candles every 50 ms and receives live updates) and tables what
each test measured: the web process's RSS before and after, the normal client's read
latency and the longest gap between its live updates during the attack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

GOAL_MS = 250  # a normal read and a live update gap during an attack


def run() -> list[dict[str, Any]]:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="lc-bench-hostile-clients-") as tmp:
        figures = Path(tmp) / "figures.jsonl"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/integration/test_hostile_clients.py",
            ],
            cwd=root,
            env={**os.environ, "BENCH_HOSTILE_FIGURES": str(figures)},
            capture_output=True,
            text=True,
        )
        lines = figures.read_text().splitlines() if figures.exists() else []
    rows: list[dict[str, Any]] = []
    for line in lines:
        f = json.loads(line)
        rows.append(
            {
                "bench": "hostile_clients",
                "name": f["name"],
                "rss_mb": round(f["rss_after_mb"], 1),
                "read_p50_ms": f["read_p50_ms"],
                "read_max_ms": f["read_max_ms"],
                "live_gap_max_ms": f["live_max_gap_ms"],
                "note": f"RSS {f['rss_before_mb']:.1f} -> {f['rss_after_mb']:.1f} MB; "
                f"{f['reads']} reads, {f['non_200']} not 200, {f['live_updates']} live "
                f"updates; goal: reads and live gaps <= {GOAL_MS} ms",
            }
        )
    if done.returncode != 0:
        tail = done.stdout[-1500:]
        rows.append({"bench": "hostile_clients", "name": "tests FAILED", "note": tail})
    return rows
