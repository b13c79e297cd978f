"""HeaderTimeoutProtocol: uvicorn's HTTP protocol (httptools) with a deadline for a
request's headers. uvicorn has no such timeout (its ``timeout_keep_alive`` runs only
between requests and is reset by every byte received), so a client that connects and
sends nothing, or trickles a header a byte at a time (slowloris), would hold its
connection for ever. Here the clock starts when the connection opens and again after
each response, and stops when the headers are complete; at the deadline the
connection is closed. A request whose headers are in (a slow body, a long answer, a
websocket) is never cut.

It also counts open connections per client address (``PeerConnections``, one per
server): past ``connections_per_ip`` a new connection is answered 429 with the reason and
closed before anything of it is read (a websocket, upgraded from one of these
connections, is counted until it closes)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from livecandle.web.limits import Refusals


class PeerConnections:
    """Open connections by client address; ``limit`` 0 is no limit."""

    def __init__(self, limit: int, refusals: Refusals | None = None) -> None:
        self.limit = limit
        self.refusals = refusals or Refusals()
        self.open: dict[str, int] = {}
        self._peer: dict[asyncio.BaseTransport, str] = {}

    def admit(self, transport: asyncio.BaseTransport) -> str | None:
        """None when ``transport`` may stay (and it is counted), else why not."""
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        n = self.open.get(ip, 0)
        if 0 < self.limit <= n:
            detail = (
                f"{n} connections open from {ip} (limit {self.limit}: "
                "LIVECANDLE_CONNECTIONS_PER_IP)"
            )
            self.refusals.refused("connections_per_ip", ip, detail)
            return f"too many connections: {detail}"
        self.open[ip] = n + 1
        self._peer[transport] = ip
        return None

    def release(self, transport: asyncio.BaseTransport) -> None:
        ip = self._peer.pop(transport, None)
        if ip is not None:
            n = self.open[ip] - 1
            if n:
                self.open[ip] = n
            else:
                del self.open[ip]


def _refuse(transport: asyncio.Transport, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    transport.write(
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
        b"retry-after: 10\r\nconnection: close\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    transport.close()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0  # set per server by ``with_header_timeout``
    peers: PeerConnections | None = None  # likewise

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.peers is not None and (refusal := self.peers.admit(transport)) is not None:
            self._refused = True
            _refuse(transport, refusal)
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self._refused:  # a refused connection's bytes are never parsed
            super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        peers = self.peers
        if peers is None:
            return
        # the websocket protocol now owns the transport; its end releases the count
        ws = self.transport.get_protocol()
        ws_lost = ws.connection_lost
        transport = self.transport

        def connection_lost(exc: Exception | None) -> None:
            peers.release(transport)
            ws_lost(exc)

        ws.connection_lost = connection_lost  # type: ignore[method-assign]

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._idle():
            self._arm()  # waiting for the next request's headers

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.peers is not None:
            self.peers.release(self.transport)
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """No request is being handled (none started, or the last one answered)."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if self._idle() and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(
    header_timeout_s: float, peers: PeerConnections | None = None
) -> type[HeaderTimeoutProtocol]:
    """The protocol class for one server (uvicorn's ``http=``), with its deadline and
    its count of connections per address."""
    return type(
        "HeaderTimeoutProtocol",
        (HeaderTimeoutProtocol,),
        {"header_timeout_s": header_timeout_s, "peers": peers},
    )
