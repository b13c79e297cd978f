"""A ``livecandle emulator`` child process on a free port: for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx


def _free_port() -> int:
    # its own, not runtime's: the emulator (the exchange's stand-in) depends on no service layer
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmulatorProcess:
    """``livecandle emulator`` in a child process, reachable at ``rest_url``/``ws_url``."""

    def __init__(self, *args: str, symbols: str = "BTCUSDT,ETHUSDT") -> None:
        """``symbols=""``: no ``--symbols`` (e.g. a ``--synthetic`` universe alone)."""
        self.port = _free_port()
        self.args = [
            sys.executable,
            "-m",
            "livecandle",
            *(["--symbols", symbols] if symbols else []),
            "emulator",
            "--port",
            str(self.port),
            *args,
        ]
        self.rest_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: list[str] = []

    def start(self, timeout_s: float = 20.0) -> EmulatorProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # blocks until it listens (or dies)
        if "listening" not in line:
            rest = self.proc.stdout.read().decode() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"emulator did not start: {line}{rest}")
        # keep draining its output so a chatty child never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.rest_url + "/api/v3/ping", timeout=1).status_code == 200:
                    self.control(reset_limits=True)  # the readiness probe costs no weight
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("emulator did not answer /api/v3/ping")

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        try:
            for raw in proc.stdout:
                self.output.append(raw.decode(errors="replace"))
                del self.output[:-200]
        except ValueError:  # closed by stop()
            pass

    def control(self, **switches: Any) -> dict[str, Any]:
        r = httpx.post(self.rest_url + "/_emulator/state", json=switches, timeout=30)
        r.raise_for_status()
        state: dict[str, Any] = r.json()
        return state

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(self.rest_url + "/_emulator/state", timeout=30).json()
        return state

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
