"""``make bench``: every benchmark, a table of medians and ratios, results/latest.json.

python -m bench                 # all
python -m bench aggregation     # some: aggregation live_path reads backfill
                                #       batch fanout memory fullmarket proxy scaleout
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ALL = [
    "aggregation",
    "batch",
    "backfill",
    "reads",
    "hostile_reads",
    "hostile_clients",
    "memory",
    "live_path",
    "fanout",
    "chart",
    "fullmarket",
    "proxy",
    "scaleout",
]
RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
    }


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys and k != "bench")
    widths = {k: max(len(k), *(len(fmt(r.get(k))) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(fmt(r.get(k)).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    names = argv or ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(ALL)})", file=sys.stderr
        )
        return 2
    results: dict[str, Any] = {"machine": machine(), "benchmarks": {}}
    for name in names:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        rows = importlib.import_module(f"bench.{name}").run()
        print(table(rows), flush=True)
        print(f"({time.monotonic() - started:.0f} s)\n", flush=True)
        results["benchmarks"][name] = rows
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.json"
    if argv and latest.exists():  # a partial run keeps the other benchmarks' figures
        old = json.loads(latest.read_text())
        old["benchmarks"].update(results["benchmarks"])
        old["machine"] = results["machine"]
        results = old
    latest.write_text(json.dumps(results, indent=1) + "\n")
    with (RESULTS / "history.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "machine": results["machine"],
                    "benchmarks": {n: results["benchmarks"][n] for n in names},
                }
            )
            + "\n"
        )
    print(f"wrote {latest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
