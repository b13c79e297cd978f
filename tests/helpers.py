"""Test helpers: real processes (redis-server, the emulator) on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from livecandle.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures" / "binance"


class EmulatorProcess:
    """``livecandle emulator`` in a child process, reachable at ``rest_url``/``ws_url``."""

    def __init__(self, *args: str, symbols: str = "BTCUSDT,ETHUSDT") -> None:
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "livecandle",
            "--symbols",
            symbols,
            "emulator",
            "--port",
            str(self.port),
            *args,
        ]
        self.rest_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> EmulatorProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # blocks until it listens (or dies)
        if "listening" not in line:
            rest = self.proc.stdout.read().decode() if self.proc.poll() is not None else ""
            raise RuntimeError(f"emulator did not start: {line}{rest}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.rest_url + "/api/v3/ping", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("emulator did not answer /api/v3/ping")

    def control(self, **switches: Any) -> dict[str, Any]:
        r = httpx.post(self.rest_url + "/_emulator/state", json=switches, timeout=5)
        r.raise_for_status()
        state: dict[str, Any] = r.json()
        return state

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(self.rest_url + "/_emulator/state", timeout=5).json()
        return state

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
