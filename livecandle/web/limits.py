"""Per-client and per-address limits (issue 13): what one peer can make the server hold or
do at once, and the clear answer it gets past a limit.

- ``RequestLimits`` (ASGI): each address runs at most ``per_ip`` HTTP requests at once;
  the next ``queued_per_ip`` wait their turn, any more are answered 429 at once. A flood
  of expensive queries from one address then takes its share of the event loop and of
  the Redis pool, and a normal client from another address is served beside it.
  socket.io's long-polling requests are left to the session limits below (a poll is
  held open on purpose), except that a polling POST whose ``Content-Length`` is over
  ``socketio_max_bytes`` is a 413 here: engine.io would answer it only after closing
  the session, which waits for the next poll, so the POST hung for ever.
- ``SocketLimits`` (socket.io, installed on the engine.io server of ``Realtime``):
  engine.io sessions per address; messages per client (a token bucket of
  ``messages_per_s``, ``2 x`` as burst: a subscribe/unsubscribe flood); rooms per
  client. A client past a message or room limit gets an ``error`` event naming the
  limit, then is disconnected; a handshake past the session limit is a 429 with the
  reason (``RequestLimits`` asks ``session_refusal``, over polling and websocket alike;
  engine.io's own 401 remains the backstop).
- ``Refusals``: one log line per reason and address per minute (with how many were
  refused), so an attack cannot flood the log through its refusals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
from socketio.packet import EVENT

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class Refusals:
    """Counts refusals by reason; logs the first of each (reason, address) per minute."""

    def __init__(
        self,
        counts: defaultdict[str, int] | None = None,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock_s = clock_s
        self.counts = defaultdict(int) if counts is None else counts
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def refused(self, reason: str, address: str, detail: str) -> None:
        self.counts[reason] += 1
        now = self.clock_s()
        key = (reason, address)
        last = self._logged.get(key)
        if last is None or now - last[0] >= LOG_EVERY_S:
            since = f" ({last[1]} more since the last line)" if last and last[1] else ""
            log.warning("refused %s: %s%s", address, detail, since)
            self._logged[key] = (now, 0)
            if len(self._logged) > 10_000:  # many addresses: keep the newest
                for k in list(self._logged)[:5_000]:
                    del self._logged[k]
        else:
            self._logged[key] = (last[0], last[1] + 1)


def client_address(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _send_json(
    send: Any,
    status: int,
    body: dict[str, Any],
    retry_after: int | None = None,
    prefix: str = "",  # "websocket.": a refused websocket handshake's HTTP answer
) -> None:
    data = msgspec.json.encode(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": f"{prefix}http.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}http.response.body", "body": data})


class _Address:
    __slots__ = ("running", "turn", "waiting")

    def __init__(self, per_ip: int) -> None:
        self.running = 0
        self.waiting = 0
        self.turn = asyncio.Semaphore(per_ip)


class RequestLimits:
    """ASGI middleware: HTTP requests at once per client address (0: no limit)."""

    def __init__(
        self,
        app: Any,
        per_ip: int,
        queued_per_ip: int,
        refusals: Refusals,
        socketio_max_bytes: int = 64 * 1024,
        socketio_path: str = "/socket.io/",
        session_refusal: Callable[[str], str | None] | None = None,
    ) -> None:
        self.app = app
        # a new socket.io session is refused here, with its reason, over both
        # transports (engine.io's own refusal of a websocket is a bare 403)
        self.session_refusal = session_refusal
        self.socketio_max_bytes = socketio_max_bytes
        self.per_ip = per_ip
        self.queued_per_ip = queued_per_ip
        self.refusals = refusals
        self.socketio_path = socketio_path
        self.addresses: dict[str, _Address] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            refusal = self._new_session_refusal(scope)
            if refusal is None:
                await self.app(scope, receive, send)
            elif "websocket.http.response" in scope.get("extensions", {}):
                await _send_json(send, 429, {"message": refusal}, 10, "websocket.")
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": refusal[:120]})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(self.socketio_path):
            refusal = self._new_session_refusal(scope)
            if refusal is not None:
                await _send_json(send, 429, {"message": refusal}, 10)
                return
            if scope["method"] == "POST" and self._too_long(scope):
                ip = client_address(scope)
                detail = (
                    f"a socket.io POST over {self.socketio_max_bytes} bytes "
                    "(LIVECANDLE_WS_MAX_BYTES)"
                )
                self.refusals.refused("socketio_max_bytes", ip, detail)
                await _send_json(send, 413, {"error": f"too large: {detail}"})
                return
            await self.app(scope, receive, send)
            return
        if self.per_ip <= 0:
            await self.app(scope, receive, send)
            return
        ip = client_address(scope)
        a = self.addresses.get(ip)
        if a is None:
            a = self.addresses[ip] = _Address(self.per_ip)
        if a.turn.locked() and a.waiting >= self.queued_per_ip:
            detail = (
                f"{a.running} requests running and {a.waiting} waiting from {ip} "
                f"(limits {self.per_ip} and {self.queued_per_ip}: "
                "LIVECANDLE_REQUESTS_PER_IP, LIVECANDLE_QUEUED_REQUESTS_PER_IP)"
            )
            self.refusals.refused("requests_per_ip", ip, detail)
            await _send_json(send, 429, {"error": f"too many requests at once: {detail}"}, 1)
            return
        a.waiting += 1
        try:
            await a.turn.acquire()
        finally:
            a.waiting -= 1
        a.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            a.running -= 1
            a.turn.release()
            if a.running == 0 and a.waiting == 0:
                self.addresses.pop(ip, None)

    def _new_session_refusal(self, scope: Any) -> str | None:
        if (
            self.session_refusal is None
            or not scope["path"].startswith(self.socketio_path)
            or b"sid=" in scope.get("query_string", b"")
        ):
            return None
        return self.session_refusal(client_address(scope))

    def _too_long(self, scope: Any) -> bool:
        for k, v in scope["headers"]:
            if k == b"content-length":
                return not v.isdigit() or int(v) > self.socketio_max_bytes
        return False


class _Bucket:
    __slots__ = ("at_s", "tokens")

    def __init__(self, tokens: float, at_s: float) -> None:
        self.tokens = tokens
        self.at_s = at_s


class SocketLimits:
    """Limits on socket.io clients, installed around the engine.io server's handlers of
    ``sio`` (``install``); a limit of 0 is no limit."""

    def __init__(
        self,
        sio: Any,
        refusals: Refusals,
        sessions_per_ip: int = 1000,
        messages_per_s: float = 20.0,
        max_rooms: int = 4096,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sio = sio
        self.refusals = refusals
        self.sessions_per_ip = sessions_per_ip
        self.messages_per_s = messages_per_s
        self.burst = 2 * messages_per_s
        self.max_rooms = max_rooms
        self.clock_s = clock_s
        self.sessions: dict[str, int] = defaultdict(int)
        self._address: dict[str, str] = {}  # engine.io sid -> address
        self._buckets: dict[str, _Bucket] = {}
        self._cut: set[str] = set()  # being disconnected: their messages are dropped
        self.cut_off = 0

    def install(self) -> SocketLimits:
        handlers = self.sio.eio.handlers
        on_connect, on_message = handlers["connect"], handlers["message"]
        on_disconnect = handlers["disconnect"]

        async def connect(eio_sid: str, environ: dict[str, Any]) -> Any:
            refusal = self._open(eio_sid, environ)
            if refusal is not None:
                return refusal  # engine.io answers 401 {"message": refusal}
            return await on_connect(eio_sid, environ)

        async def message(eio_sid: str, data: Any) -> None:
            if eio_sid in self._cut:
                return
            why = self._over_rate(eio_sid)
            if why is None:
                await on_message(eio_sid, data)
                # rooms are counted by a scan of them all: only after a subscribe
                if isinstance(data, str) and '"subscribe"' in data[:32]:
                    why = self._over_rooms(eio_sid)
            if why is not None:
                await self._cut_off(eio_sid, *why)

        async def disconnect(eio_sid: str, reason: Any = None) -> None:
            self._close(eio_sid)
            await on_disconnect(eio_sid, reason)

        handlers.update(connect=connect, message=message, disconnect=disconnect)
        return self

    def session_refusal(self, ip: str) -> str | None:
        """Why a new session from ``ip`` is refused (None: it is not); refusals are
        counted and logged."""
        if 0 < self.sessions_per_ip <= self.sessions.get(ip, 0):
            detail = (
                f"{self.sessions[ip]} socket.io sessions open from {ip} (limit "
                f"{self.sessions_per_ip}: LIVECANDLE_SOCKETIO_SESSIONS_PER_IP)"
            )
            self.refusals.refused("sessions_per_ip", ip, detail)
            return f"too many sessions: {detail}"
        return None

    def _open(self, eio_sid: str, environ: dict[str, Any]) -> str | None:
        ip = client_address(environ.get("asgi.scope") or {})
        refusal = self.session_refusal(ip)
        if refusal is not None:
            return refusal
        self.sessions[ip] += 1
        self._address[eio_sid] = ip
        return None

    def _close(self, eio_sid: str) -> None:
        self._buckets.pop(eio_sid, None)
        self._cut.discard(eio_sid)
        ip = self._address.pop(eio_sid, None)
        if ip is not None:
            self.sessions[ip] -= 1
            if self.sessions[ip] <= 0:
                del self.sessions[ip]

    def _over_rate(self, eio_sid: str) -> tuple[str, str] | None:
        if self.messages_per_s <= 0:
            return None
        now = self.clock_s()
        b = self._buckets.get(eio_sid)
        if b is None:
            b = self._buckets[eio_sid] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at_s) * self.messages_per_s)
        b.at_s = now
        if b.tokens < 1:
            return "messages_per_s", (
                f"more than {self.messages_per_s:g} messages a second (burst "
                f"{self.burst:g}: LIVECANDLE_SOCKETIO_MESSAGES_PER_S)"
            )
        b.tokens -= 1
        return None

    def _over_rooms(self, eio_sid: str) -> tuple[str, str] | None:
        if self.max_rooms <= 0:
            return None
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None:
            return None
        rooms = len(self.sio.manager.get_rooms(sid, "/")) - 1  # its own room is not counted
        if rooms <= self.max_rooms:
            return None
        return "max_rooms", (
            f"subscribed to {rooms} rooms (limit {self.max_rooms}: LIVECANDLE_SOCKETIO_MAX_ROOMS)"
        )

    async def _cut_off(self, eio_sid: str, reason: str, detail: str) -> None:
        """Tell the client why (an ``error`` event), then disconnect it."""
        self._cut.add(eio_sid)
        self.cut_off += 1
        ip = self._address.get(eio_sid, "unknown")
        self.refusals.refused(reason, ip, f"a socket.io client disconnected: {detail}")
        error = {"event": "limit", "error": f"disconnected: {detail}"}
        encoded = self.sio.packet_class(EVENT, namespace="/", data=["error", error]).encode()
        try:
            await self.sio.eio.send(eio_sid, encoded)
        except KeyError:  # gone already
            return
        # engine.io queues its CLOSE after the error, so the client reads the reason first
        await self.sio.eio.disconnect(eio_sid)
