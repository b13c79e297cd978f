"""A websocket connection's outgoing messages, written in batches.

The hub appends every message to the connection's outbox (a list: no task switch per
message); the connection's writer wakes once per batch and writes every waiting message
as websocket frames in one socket write. Under uvicorn's sans-I/O websockets protocol
without compression, the frames are made here (a server's text frame is a 2 to 10 byte
header and the payload); otherwise each message goes through the ASGI send. A reader too
slow for the stream is cut, as Binance cuts it: a full socket buffer stops the writing
(uvicorn's flow control), and an outbox over ``limit`` messages closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.protocol import OPEN, Protocol

QUEUE_LIMIT = 200_000  # messages waiting; more: the connection is closed
RAW_SEND = "emulator.raw_send"  # the scope key of the server's own ASGI send


class RawSend:
    """ASGI middleware keeping the server's own websocket ``send`` in the scope:
    Starlette's routing wraps it in a closure, which hides uvicorn's protocol."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


def text_frame(data: bytes) -> bytes:
    """An unmasked, final text frame (RFC 6455 5.2)."""
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65_536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + data
    return b"\x81\x7f" + n.to_bytes(8, "big") + data


# a text frame's header for each payload length below 16 KB, as latin-1 text
_HEADERS = [text_frame(b"x" * n)[: 2 if n < 126 else 4].decode("latin-1") for n in range(16_384)]


def text_frames(msgs: list[str]) -> bytes:
    """``text_frame`` of each message, encoded at once: ASCII messages (every market
    event) are joined with their headers as latin-1 text, one encoding per batch."""
    headers = _HEADERS
    if "".join(msgs).isascii():
        try:
            return "".join([x for m in msgs for x in (headers[len(m)], m)]).encode("latin-1")
        except IndexError:  # a message of 16 KB or more
            pass
    return b"".join([text_frame(m.encode()) for m in msgs])


class Outbox:
    """Messages waiting for one connection, and its writer."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self.items: list[str] = []
        self.closing = False
        self.sent = 0
        self.mode = ""  # how it writes: "frames" (made here), "protocol" or "asgi"
        self._wake = asyncio.Event()

    def put(self, msg: str) -> None:
        if self.closing:
            return
        self.items.append(msg)
        if len(self.items) == 1:
            self._wake.set()
        if len(self.items) > self.limit:
            self.close()

    def put_all(self, msgs: list[str]) -> None:
        """``put`` of each message, in order."""
        if self.closing or not msgs:
            return
        was_empty = not self.items
        self.items += msgs
        if was_empty:
            self._wake.set()
        if len(self.items) > self.limit:
            self.close()

    def close(self) -> None:
        """Write what waits, then close."""
        self.closing = True
        self._wake.set()

    async def _next(self) -> list[str] | None:
        """The waiting messages (None: closing and nothing left)."""
        while not self.items:
            if self.closing:
                return None
            self._wake.clear()
            await self._wake.wait()
        batch, self.items = self.items, []
        return batch

    async def run(self, ws: WebSocket) -> None:
        """Write until closed (by ``close`` or by the peer going away)."""
        send = ws.scope.get(RAW_SEND, ws._send)  # not Starlette's wrapper: it costs
        proto: Any = getattr(send, "__self__", None)
        conn = getattr(proto, "conn", None)
        transport: Any = getattr(proto, "transport", None)
        if isinstance(conn, Protocol) and _writable(transport):
            self.mode = "protocol" if conn.extensions else "frames"
            await self._frames(proto, conn, transport)
            return
        self.mode = "asgi"
        while (batch := await self._next()) is not None:
            for msg in batch:
                await send({"type": "websocket.send", "text": msg})
                self.sent += 1

    async def _frames(self, proto: Any, conn: Protocol, transport: asyncio.WriteTransport) -> None:
        raw = not conn.extensions  # compressed frames: websockets makes them
        writable = getattr(proto, "writable", None)  # uvicorn's flow control
        while (batch := await self._next()) is not None:
            while isinstance(writable, asyncio.Event) and not writable.is_set():
                if self.closing:  # over the limit and still not reading: cut it
                    transport.abort()
                    return
                with contextlib.suppress(TimeoutError):  # the peer reads slowly: wait
                    await asyncio.wait_for(writable.wait(), 1.0)
            if proto.close_sent or conn.state is not OPEN or transport.is_closing():
                return
            if raw:
                transport.write(text_frames(batch))
            else:
                for m in batch:
                    conn.send_text(m.encode())
                transport.write(b"".join(conn.data_to_send()))
            self.sent += len(batch)


def _writable(transport: Any) -> bool:
    """A transport the frames can be written to: asyncio's, or uvloop's (which does not
    derive from ``asyncio.WriteTransport``)."""
    return all(callable(getattr(transport, m, None)) for m in ("write", "is_closing", "abort"))
