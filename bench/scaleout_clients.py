"""The client processes of ``bench scaleout``: a latency client (as ``live_path``'s, with
the exchange clock offset as ``fullmarket``'s) and the hand-over watcher, and the reading
of what the watcher wrote."""

from __future__ import annotations

import json
from pathlib import Path

from bench import live_path

CLIENT = live_path.CLIENT  # argv: url, symbols, warmup_s, seconds, exchange offset ms

# the hand-over client: prints "ready", then writes one line per live price (symbol,
# exchange time received, trade time) to a file until its stdin closes
WATCHER = r"""
import asyncio, json, sys, time
import socketio
url, symbols, offset_ms, out = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
async def main():
    sio = socketio.AsyncClient(reconnection=True)
    f = open(out, "w", buffering=1)  # line by line: the bench reads it meanwhile
    @sio.on("live_price")
    async def on_price(m):
        f.write(json.dumps([m["symbol"], time.time() * 1000 + offset_ms, m["time"]]) + "\n")
    await sio.connect(url, transports=["websocket"], wait_timeout=30)
    for s in symbols:
        await sio.call("subscribe", {"symbol": s, "interval": "1m"}, timeout=30)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await sio.disconnect()
    f.close()
asyncio.run(main())
"""


def after_kill(out: Path, kill_ms: float) -> dict[str, float]:
    """Per symbol, ms from the kill until the first live price traded after it arrived."""
    first: dict[str, float] = {}
    lines = out.read_text().splitlines() if out.exists() else []
    for line in lines:
        try:
            symbol, received_ms, trade_ms = json.loads(line)
        except ValueError:  # the last line, half written while the watcher runs
            continue
        if trade_ms > kill_ms and symbol not in first:
            first[symbol] = received_ms - kill_ms
    return first
