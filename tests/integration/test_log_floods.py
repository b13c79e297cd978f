"""A flood of malformed socket.io packets against a real ``livecandle serve`` process:
its log stays short, each traceback is printed once, and it still serves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio
import websockets

from tests.helpers import EmulatorProcess


@pytest.fixture
def web_process(
    redis_url: str, emulator: EmulatorProcess, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """(its URL, the file its stderr goes to)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECANDLE_")}
    env.update(
        LIVECANDLE_REDIS_URL=redis_url,
        LIVECANDLE_BINANCE_REST_URL=emulator.rest_url,
        LIVECANDLE_BINANCE_WS_URL=emulator.ws_url,
        LIVECANDLE_PORT="0",
        LIVECANDLE_INTERVALS="1m",
        # the flood is of log lines: no message rate limit cuts the client off first
        LIVECANDLE_SOCKETIO_MESSAGES_PER_S="0",
    )
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livecandle", "serve", "--role", "web"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "livecandle: open http://... in a browser"
        assert "http://" in line, (line, stderr.read_text())
        yield line.split("open ", 1)[1].split()[0], stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_thousands_of_malformed_packets_write_a_short_log_and_the_server_still_serves(
    web_process: tuple[str, Path],
) -> None:
    url, stderr = web_process
    before = len(stderr.read_text().splitlines())
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(ws_url) as ws:
        assert str(await ws.recv()).startswith("0")  # engine.io open
        await ws.send("40")
        assert str(await ws.recv()).startswith("40")  # socket.io connected
        for _ in range(3000):
            await ws.send('42["subscribe"')
        # the same connection is still answered: an ack for a good subscribe
        await ws.send('421["subscribe",{"symbol":"BTCUSDT","interval":"1m"}]')
        async with asyncio.timeout(30):
            while not str(reply := await ws.recv()).startswith("431"):
                pass
        assert '"ok":true' in str(reply)

    normal = socketio.AsyncClient(reconnection=False)
    await normal.connect(url, transports=["websocket"])
    ack = await normal.call("subscribe", {"symbol": "ETHUSDT", "interval": "1m"})
    assert ack == {"ok": True, "room": "ETHUSDT:1m"}
    await normal.disconnect()

    log = stderr.read_text().splitlines()[before:]
    assert len(log) < 50, "\n".join(log[:80])
    assert sum("Traceback" in line for line in log) == 1, "\n".join(log)
    assert "handler error" in log[-1] and "counted, not logged" in log[-1], log[-1]
