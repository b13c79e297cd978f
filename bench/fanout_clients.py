"""The fan-out benchmark's clients: N socket.io clients in one process, as cheap per
received message as Python allows, so that the benchmark measures the server.

Each client is a bare ``asyncio.Protocol`` on uvloop speaking WebSocket (RFC 6455, with
``permessage-deflate`` offered as browsers do), Engine.IO 4 and Socket.IO 5 itself: a
received frame costs a header parse, a byte search for ``"updated_ms":`` and one int
parse, where the ``websockets`` library spends a task wake-up, a frame object and a JSON
decode (about 90 us per message, which made the old client process, not the server, the
bound at 20,000 messages/s on 2 cores).

    python -m bench.fanout_clients WS_URL SYMBOLS N SECONDS
prints ``ready`` once every client is subscribed, waits for a line on stdin (the
publisher has started), waits 2 s, measures SECONDS and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import zlib
from urllib.parse import urlsplit

import uvloop

MARK = b'"updated_ms":'
EVENT = b'42["live_candle"'


def _frame(text: bytes) -> bytes:
    """A masked client text frame (the mask is all zeros: valid, and no XOR to do)."""
    n = len(text)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2)
    return head + b"\0\0\0\0" + text


class Client(asyncio.Protocol):
    def __init__(self, host: str, path: str, symbol: str, stats: Stats) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
        self.symbol = symbol
        self.stats = stats
        self.buf = b""
        self.handshaken = False
        self.inflate: zlib._Decompress | None = None
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribing"))

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(_frame(text.encode()))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.decode(errors="replace"))
            if b"permessage-deflate" in head:
                self.inflate = zlib.decompressobj(-15)
            self.handshaken = True
            buf = buf[end + 4 :]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1] & 0x7F
            at = pos + 2
            if b1 == 126:
                if n - at < 2:
                    break
                b1, at = int.from_bytes(buf[at : at + 2]), at + 2
            elif b1 == 127:
                if n - at < 8:
                    break
                b1, at = int.from_bytes(buf[at : at + 8]), at + 8
            if n - at < b1:
                break
            payload = buf[at : at + b1]
            pos = at + b1
            opcode = b0 & 0x0F
            if opcode == 1:
                if b0 & 0x40:  # RSV1: compressed (one frame per message from the server)
                    assert self.inflate is not None
                    payload = self.inflate.decompress(payload + b"\0\0\xff\xff")
                self.message(payload)
            elif opcode == 9:  # websocket ping
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
                return
        self.buf = buf[pos:]

    def message(self, m: bytes) -> None:
        stats = self.stats
        if m.startswith(EVENT):
            if stats.measuring:
                at = m.find(MARK) + len(MARK)  # a ms timestamp has 13 digits until 2286
                stats.latencies.append(stats.now_ms() - int(m[at : at + 13]))
        elif m == b"2":  # engine.io ping
            self.send("3")
        elif m.startswith(b"0{"):  # engine.io open
            self.send("40")
        elif m.startswith(b"40"):  # socket.io connected
            sub = json.dumps(["subscribe", {"symbol": self.symbol, "interval": "1m"}])
            self.send("421" + sub)
        elif m.startswith(b"431") and not self.ready.done():  # the subscribe ack
            self.ready.set_result(None)


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[int] = []

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000


async def main(url: str, symbols: list[str], n: int, seconds: float) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + ("?" + parts.query if parts.query else "")
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[Client] = []
    for i in range(n):
        _, client = await loop.create_connection(
            lambda i=i: Client(f"{host}:{port}", path, symbols[i % len(symbols)], stats),
            host,
            port,
        )
        clients.append(client)
        if i % 50 == 49:
            await asyncio.gather(*(c.ready for c in clients[-50:]))
    await asyncio.gather(*(c.ready for c in clients))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the publisher has started
    await asyncio.sleep(2)
    stats.measuring = True
    c0 = time.process_time()
    await asyncio.sleep(seconds)
    stats.measuring = False
    cpu = (time.process_time() - c0) / seconds
    lat = sorted(stats.latencies)
    k = len(lat)
    dropped = sum(1 for c in clients if c.closed.done())
    print(
        json.dumps(
            {
                "events": k,
                "p50": lat[k // 2] if k else None,
                "p99": lat[int(k * 0.99)] if k else None,
                "cpu_clients": cpu,
                "disconnected": dropped,
            }
        ),
        flush=True,
    )
    for c in clients:
        if c.transport is not None:
            c.transport.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4])))
