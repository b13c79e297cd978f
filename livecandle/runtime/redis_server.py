"""A private ``redis-server`` child process: the default store when no URL is configured.

Data is appended to ``<data_dir>/appendonlydir`` (the append-only file, no RDB
snapshots); the server listens on a unix socket inside ``data_dir`` (or on a free
loopback port when the socket path would be too long) and is shut down, with a final
write and fsync of the file, when the owner stops.

Durability (``appendfsync everysec``): Redis hands every write to the kernel before it
answers it and fsyncs once a second in the background. A crash of redis-server alone
(``kill -9``) loses nothing it acknowledged (unless the disk stalled an fsync for over
2 s, when Redis delays its writes: up to 2 s then); a crash of the machine loses the
last second or two. Either way the service refills without a restart: official rows are
fetched again from the exchange, the live candles are rewritten within a write period
(tests/integration/test_redis_restart.py, with and without the file).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

_UNIX_PATH_MAX = 100


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_redis_server() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        raise RedisServerError(
            "redis-server is not installed: run `make run` as root (installs it with apt) "
            "or `sudo apt-get install redis-server`, or set LIVECANDLE_REDIS_URL"
        )
    return path


class RedisServer:
    """Start with ``start()``, read ``url``, stop with ``stop()`` (or use as a context)."""

    def __init__(
        self, data_dir: str | os.PathLike[str], persist: bool = True, tcp: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.persist = persist
        self.tcp = tcp
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout_s: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--dir",
            str(self.data_dir),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            # series of up to 2048 candles stay listpack-encoded: ~197 B per candle instead
            # of ~280 B as a skiplist (bench/memory.py); their reads and appends stay cheap
            "--zset-max-listpack-entries",
            "2048",
            "--zset-max-listpack-value",
            "256",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        sock = self.data_dir / "redis.sock"
        if not self.tcp and len(str(sock)) < _UNIX_PATH_MAX:
            if sock.exists():
                sock.unlink()
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
            probe: tuple[str, object] = ("unix", str(sock))
        else:
            port = free_port()
            args += ["--port", str(port)]
            self.url = f"redis://127.0.0.1:{port}/0"
            probe = ("tcp", port)
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-500:] if log.exists() else ""
                raise RedisServerError(f"redis-server exited at start: {err or tail}".strip())
            if _ping(probe):
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: redis-server flushes the append-only file and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ping(probe: tuple[str, object]) -> bool:
    kind, where = probe
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    addr = where if kind == "unix" else ("127.0.0.1", where)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(addr)  # type: ignore[arg-type]
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False
