"""Binance's websocket market streams served by livecandle (issue 11, item 5).

ASGI middleware in front of the web app: websocket connections to ``/ws``,
``/ws/<stream>[/<stream>...]`` (raw payloads) and ``/stream?streams=a/b`` (combined,
``{"stream":..,"data":..}``) are served here, every other scope goes to the app (socket.io
lives under ``/socket.io/``, so nothing clashes). Streams are read through the
``StreamHub`` (one upstream subscription per stream, whatever the number of readers), and
the live-subscription protocol is Binance's (``stream_protocol``): SUBSCRIBE,
UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY / GET_PROPERTY ``combined``, with its
answers and error frames.

Binance's limits, per connection, as the exchange applies them: at most ``max_streams``
(1024) streams (a SUBSCRIBE past it is an error answer; a URL naming more is refused),
more than ``max_incoming_per_s`` (5) incoming messages a second closes the connection
(1008), a message over ``max_message_bytes`` (about 4 KB) is ignored unanswered. Payloads
are the upstream's bytes, so times are in milliseconds: ``timeUnit=MICROSECOND`` is
refused at the handshake (400) rather than answered in the wrong unit. Names in
the URL that are no stream are ignored, as Binance ignores them (ccxt.pro connects to
``/ws/<n>`` and then subscribes). Our own limits: at most ``connections_per_ip`` and
``max_connections`` connections at once (past them the handshake is answered 429); at
most the hub's ``max_upstream_streams`` streams upstream, every client together (past it a
SUBSCRIBE is an error answer, a URL a 429: made-up names cannot open upstream connections
without end); each
connection's outgoing frames wait in a bounded queue (``queue_messages`` frames or
``queue_bytes`` bytes), and a reader that lets it fill, or takes nothing for ``stall_s``
while frames wait, is dropped (its socket aborted), never buffered without bound: the
idea of ``client_queue`` for socket.io. Every violation is counted; none of them touches
another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import msgspec

from livecandle.exchange.binance.stream_protocol import (
    Request,
    RequestError,
    error_frame,
    parse_request,
    result_frame,
    valid_stream,
)
from livecandle.web.limits import client_address
from livecandle.web.stream_hub import StreamHub

log = logging.getLogger(__name__)


@dataclass
class StreamLimits:
    """Binance's per-connection limits (its defaults) and ours."""

    max_streams: int = 1024  # per connection
    max_incoming_per_s: int = 5  # per connection; more: closed
    max_message_bytes: int = 4096  # a larger incoming message is ignored, unanswered
    connections_per_ip: int = 64  # at once; more: the handshake is answered 429
    max_connections: int = 4096  # at once, every address
    queue_messages: int = 10_000  # frames waiting for one reader; more: dropped
    queue_bytes: int = 16 << 20
    stall_s: float = 30.0  # frames waiting and none taken this long: dropped


class Connection:
    """One client: its streams, its bounded outgoing queue and its writer."""

    def __init__(self, proxy: StreamProxy, ip: str, send: Any, combined: bool) -> None:
        self.proxy = proxy
        self.ip = ip
        self._send = send
        self.combined = combined
        self.streams: dict[str, None] = {}  # ordered: LIST_SUBSCRIPTIONS answers in order
        self.queue: deque[str] = deque()
        self.queued_bytes = 0  # characters: the frames are ASCII JSON
        self.taken_s = time.monotonic()
        self.incoming: deque[float] = deque()
        self.dropped = False
        self.gone = False  # the peer closed or went away
        self.writer: asyncio.Task[None] | None = None
        self.closing: int | None = None  # a close code, once the queue is written
        self._wake = asyncio.Event()

    def deliver(self, frame: str) -> None:
        if self.dropped or self.closing is not None:
            return
        queue = self.queue
        limits = self.proxy.limits
        if queue and time.monotonic() - self.taken_s > limits.stall_s:
            self.drop("stalled")
            return
        queue.append(frame)
        self.queued_bytes += len(frame)
        if len(queue) > limits.queue_messages or self.queued_bytes > limits.queue_bytes:
            self.drop("slow")
            return
        if len(queue) == 1:
            self.taken_s = time.monotonic()  # the wait for this one starts now
            self._wake.set()

    def close(self, code: int) -> None:
        """Write what waits, then close with ``code``."""
        self.closing = code
        self._wake.set()

    def drop(self, reason: str) -> None:
        """A reader too slow: abort its socket (nothing more is written to it)."""
        if self.dropped:
            return
        self.dropped = True
        self.proxy.violations[f"{reason}_dropped"] += 1
        log.info("stream proxy: dropping a %s reader at %s", reason, self.ip)
        self.queue.clear()
        self.queued_bytes = 0
        self._wake.set()
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        abort = getattr(transport, "abort", None)  # asyncio's or uvloop's transport
        if callable(abort):
            abort()  # the reader side then sees the disconnect
        elif self.writer is not None:
            self.writer.cancel()  # a server without a transport to abort: stop writing

    async def finish(self) -> None:
        """The connection ends: write what waits and close (bounded), else cut it."""
        writer = self.writer
        if writer is None:
            return
        if not self.gone:
            if self.closing is None:
                self.close(1000)
            # wait() does not raise: a writer that failed (the peer went away) or was
            # cancelled (dropped) is just done
            done, _ = await asyncio.wait({writer}, timeout=2.0)
            if not done:  # a peer that reads nothing more: cut it
                self.drop("unclosed")
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer

    async def write(self) -> None:
        """Write queued frames until closed or dropped."""
        send = self._send
        queue = self.queue
        while not self.dropped:
            if not queue:
                if self.closing is not None:
                    await send({"type": "websocket.close", "code": self.closing})
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            frame = queue.popleft()
            self.queued_bytes -= len(frame)
            self.taken_s = time.monotonic()
            await send({"type": "websocket.send", "text": frame})


class StreamProxy:
    """ASGI middleware: Binance's stream endpoints here, everything else to ``app``."""

    def __init__(self, app: Any, hub: StreamHub, limits: StreamLimits | None = None) -> None:
        self.app = app
        self.hub = hub
        self.limits = limits or StreamLimits()
        self.connections: set[Connection] = set()
        self.by_ip: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "websocket" or not (
            path in ("/ws", "/stream") or path.startswith("/ws/")
        ):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == "/stream":
            names, combined = "/".join(query.get("streams", [])), True
        else:
            names, combined = path[4:], False
        # payloads go out as the upstream made them: in milliseconds only
        units = {u.upper() for u in query.get("timeUnit", [])}
        await self._serve(
            scope,
            receive,
            send,
            [n for n in names.split("/") if n],
            combined,
            units <= {"MILLISECOND"},
        )

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "addresses": len(self.by_ip),
            "requests": self.requests,
            "violations": dict(self.violations),
            "queued": sum(len(c.queue) for c in self.connections),
            "hub": self.hub.stats(),
        }

    def _refusal(self, ip: str, names: list[str]) -> tuple[int, str] | None:
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            self.violations["connections_refused"] += 1
            return 429, f"too many connections ({limits.max_connections})"
        if self.by_ip[ip] >= limits.connections_per_ip:
            self.violations["connections_refused"] += 1
            return 429, f"too many connections from {ip} ({limits.connections_per_ip})"
        if len(names) > limits.max_streams:
            self.violations["too_many_streams"] += 1
            return 400, f"too many streams ({len(names)} > {limits.max_streams})"
        if not self.hub.room_for(names):
            self.violations["upstream_full"] += 1
            return 429, f"too many streams on this server ({self.hub.max_upstream_streams})"
        return None

    async def _serve(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        names: list[str],
        combined: bool,
        milliseconds: bool = True,
    ) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        ip = client_address(scope)
        streams = list(dict.fromkeys(n for n in names if valid_stream(n)))
        if len(streams) < len(names):
            self.violations["url_names_ignored"] += 1
        refusal = self._refusal(ip, streams)
        if refusal is None and not milliseconds:
            self.violations["time_unit_refused"] += 1
            refusal = 400, "timeUnit: this server sends milliseconds only (MILLISECOND)"
        if refusal is not None:
            await _deny(scope, send, *refusal)
            return
        conn = Connection(self, ip, send, combined)
        self.connections.add(conn)  # counted before the accept's await: no race past a cap
        self.by_ip[ip] += 1
        try:
            await send({"type": "websocket.accept"})
            conn.writer = asyncio.create_task(conn.write(), name="stream-proxy-writer")
            self._subscribe(conn, streams)
            await self._read(conn, receive)
        finally:
            self.hub.leave(conn, list(conn.streams))
            self.connections.discard(conn)
            self.by_ip[ip] -= 1
            if self.by_ip[ip] <= 0:
                del self.by_ip[ip]
            await conn.finish()

    async def _read(self, conn: Connection, receive: Any) -> None:
        limits = self.limits
        incoming = conn.incoming
        while not conn.dropped:
            message = await receive()
            if message["type"] != "websocket.receive":  # websocket.disconnect
                conn.gone = True
                return
            now = time.monotonic()
            incoming.append(now)
            while incoming and now - incoming[0] > 1.0:
                incoming.popleft()
            if len(incoming) > limits.max_incoming_per_s:
                self.violations["rate_disconnects"] += 1
                log.info(
                    "stream proxy: closing %s: over %d messages/s",
                    conn.ip,
                    limits.max_incoming_per_s,
                )
                conn.close(1008)
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            if len(text) > limits.max_message_bytes or (
                len(text.encode()) > limits.max_message_bytes
            ):
                self.violations["oversized_ignored"] += 1  # Binance does not answer
                continue
            self.requests += 1
            conn.deliver(self._answer(conn, text))

    def _answer(self, conn: Connection, text: str) -> str:
        try:
            req = parse_request(text)
        except RequestError as e:
            self.violations["bad_requests"] += 1
            return e.frame
        return self._apply(conn, req)

    def _apply(self, conn: Connection, req: Request) -> str:
        method, params, rid = req.method, req.params, req.rid
        if method == "SUBSCRIBE":
            new = [s for s in dict.fromkeys(params) if s not in conn.streams]
            if len(conn.streams) + len(new) > self.limits.max_streams:
                self.violations["too_many_streams"] += 1
                return error_frame(2, "Invalid request: too many streams", rid)
            if not self.hub.room_for(new):
                self.violations["upstream_full"] += 1
                return error_frame(2, "Invalid request: too many streams on this server", rid)
            self._subscribe(conn, new)
            return result_frame(None, rid)
        if method == "UNSUBSCRIBE":
            gone = [s for s in dict.fromkeys(params) if s in conn.streams]
            for s in gone:
                del conn.streams[s]
            self.hub.leave(conn, gone)
            return result_frame(None, rid)
        if method == "LIST_SUBSCRIPTIONS":
            return result_frame(list(conn.streams), rid)
        if method == "SET_PROPERTY":
            conn.combined = params[1]
            return result_frame(None, rid)
        return result_frame(conn.combined, rid)  # GET_PROPERTY combined

    def _subscribe(self, conn: Connection, streams: list[str]) -> None:
        for s in streams:
            conn.streams[s] = None
        self.hub.join(conn, streams)


async def _deny(scope: Any, send: Any, status: int, reason: str) -> None:
    """Refuse a handshake: an HTTP answer where the server can send one, else a close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        code = -1003 if status == 429 else -1100
        body = msgspec.json.encode({"code": code, "msg": reason})
        headers = [(b"content-type", b"application/json")]
        if status == 429:
            headers.append((b"retry-after", b"10"))
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
