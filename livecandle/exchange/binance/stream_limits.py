"""Binance's websocket limits, kept by the client (``reference/binance-api.md`` section 3).

* **Connection attempts**: 300 per 5 minutes per IP. Every attempt of the process (a
  first connect, a reconnect, a rotation) takes one from a ``ConnectionAttempts`` budget
  and waits for one when none is left, never exceeding it. ``MemoryConnectionAttempts``
  keeps it for one process; a shared implementation (Redis, for several processes of one
  IP) only needs ``take`` and ``stats``.
* **Incoming messages**: at most 5 a second per connection, pings, pongs and JSON control
  messages alike; more closes the connection. ``ControlledConnection`` (aiohttp's client
  websocket, pings not answered by the library) answers each server ping with a pong as
  it reads it and watches the pings (the shortest interval seen, the first counted from
  the opening; two pongs a window are assumed until a ping is seen); ``send_control`` paces
  our SUBSCRIBE / UNSUBSCRIBE messages so that, with the pongs that can fall in the same
  window, no ``CONTROL_WINDOW_S`` (1.1 s: a tenth of a second of margin) holds more than
  ``INCOMING_MESSAGES_PER_S`` (5). Against Binance (a ping every 20 s): 3 of ours per
  1.1 s until the first ping, then 4.
* **Message size**: the real exchange silently ignores a SUBSCRIBE much above 4 KB, so
  ``control_messages`` cuts a list of streams by encoded size (``MAX_MESSAGE_BYTES``),
  not by count; ``url_streams`` keeps connection URLs short the same way.
* **Rotation**: a connection lives at most 24 h. ``rotation_age_s`` staggers the planned
  replacements of many connections over the hours before the cut (a low-discrepancy
  slot per connection index, plus a little jitter), so they do not all reconnect at once.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import aiohttp
import msgspec
from aiohttp import WSCloseCode, WSMsgType

CONNECTION_ATTEMPTS = 300  # Binance: per IP
CONNECTION_ATTEMPTS_WINDOW_S = 300.0
INCOMING_MESSAGES_PER_S = 5  # Binance closes a connection above (pongs count too)
CONTROL_WINDOW_S = 1.1
MAX_MESSAGE_BYTES = 3_500  # a SUBSCRIBE much above 4 KB is ignored silently
MAX_URL_BYTES = 2_000
MAX_FRAME_BYTES = 2**22  # an incoming message above 4 MiB closes the connection
CLOSE_TIMEOUT_S = 2.0  # the peer's answer to our close, waited for at most
# what a failed connection attempt raises (DNS, refused, handshake, timeout)
OPEN_ERRORS: tuple[type[BaseException], ...] = (OSError, aiohttp.ClientError, TimeoutError)
_GOLDEN = (5**0.5 - 1) / 2  # successive multiples mod 1 spread evenly over [0, 1)


class ConnectionAttempts(Protocol):
    """The websocket connection attempts allowed to the IP (Binance: 300 per 5 minutes)."""

    async def take(self) -> None:
        """Wait until an attempt is allowed and count it."""
        ...

    def stats(self) -> dict[str, Any]:
        """The budget's state, for health."""
        ...


class MemoryConnectionAttempts:
    """``ConnectionAttempts`` for one process: a sliding window of attempt times, at most
    ``int(limit * safety)`` in any ``window_s``; waiters go first come first served."""

    def __init__(
        self,
        limit: int = CONNECTION_ATTEMPTS,
        window_s: float = CONNECTION_ATTEMPTS_WINDOW_S,
        safety: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.allowed = max(1, int(limit * safety))
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.attempts = 0
        self.waiting = 0
        self.waits = 0  # attempts that had to wait for room

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()

    async def take(self) -> None:
        self.waiting += 1
        arrived = self._clock()
        try:
            async with self._lock:  # first come first served
                while True:
                    now = self._clock()
                    self._expire(now)
                    if len(self._times) < self.allowed:
                        self._times.append(now)
                        self.attempts += 1
                        self.waits += now > arrived
                        return
                    await self._sleep(self._times[0] + self.window_s - now)
        finally:
            self.waiting -= 1

    def stats(self) -> dict[str, Any]:
        self._expire(self._clock())
        return {
            "limit": self.limit,
            "window_s": self.window_s,
            "allowed": self.allowed,
            "used": len(self._times),
            "waiting": self.waiting,
            "attempts": self.attempts,
            "waits": self.waits,
        }


class ControlledConnection:
    """One client websocket (aiohttp's, without compression) that answers the server's
    pings itself and remembers when it sent each message the server counts: the pongs
    (as the server's pings arrive) and our control messages.

    Only one task reads (``receive``); it answers each ping as it meets it, so a
    connection must be read from its opening on, or its pongs would bunch up."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self.sent_s: deque[float] = deque()  # our control messages in the last window
        self.control_sent = 0
        self.pongs = 0
        self.ping_interval_s: float | None = None  # the shortest seen
        self._last_ping_s = time.monotonic()  # the server's first ping counts from here

    @classmethod
    async def open(
        cls, url: str, open_timeout_s: float, max_size: int = MAX_FRAME_BYTES
    ) -> ControlledConnection:
        """Connect (DNS, TCP, TLS and the handshake within ``open_timeout_s``): messages
        up to ``max_size`` bytes, no permessage-deflate, no pings of ours."""
        # a session per socket: it lives as long, and closing it drops the socket
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            async with asyncio.timeout(open_timeout_s):
                ws = await session.ws_connect(
                    url,
                    autoping=False,  # we answer pings (``receive``): they count
                    autoclose=True,
                    compress=0,
                    max_msg_size=max_size + 1,  # aiohttp refuses one of exactly its limit
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
                )
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def receive(self) -> str | bytes | None:
        """The next data message (text as str), answering pings meanwhile; None once
        closed normally (by us, or by the server with 1000 / 1001). Raises when the
        connection ends otherwise (a broken socket, a close with an error code)."""
        ws = self._ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                return msg.data  # type: ignore[no-any-return]
            if kind is WSMsgType.PING:
                now = time.monotonic()
                interval = now - self._last_ping_s
                if self.ping_interval_s is None or interval < self.ping_interval_s:
                    self.ping_interval_s = interval
                self._last_ping_s = now
                self.pongs += 1
                await ws.pong(msg.data)
                continue
            if kind is WSMsgType.PONG:
                continue
            if kind is WSMsgType.ERROR:
                raise msg.data
            if kind is WSMsgType.CLOSING:  # our ``close`` from another task
                return None
            code = ws.close_code
            if code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY):
                return None
            raise ConnectionError(f"websocket closed with code {code}")

    def control_room(
        self, per_s: int = INCOMING_MESSAGES_PER_S, window_s: float = CONTROL_WINDOW_S
    ) -> int:
        """Control messages of ours a window may hold: the limit less the pongs that can
        fall in one window (at least one of ours, however often the server pings)."""
        if self.ping_interval_s is None:
            pongs = 2  # not seen yet: room for the first and one more
        else:
            pongs = math.ceil(window_s / max(self.ping_interval_s, 1e-3))
        return max(1, per_s - pongs)

    async def send_control(
        self,
        text: str,
        per_s: int = INCOMING_MESSAGES_PER_S,
        window_s: float = CONTROL_WINDOW_S,
    ) -> None:
        """Send a control message once the last ``window_s`` holds room for it beside
        the pongs (``control_room``)."""
        sent = self.sent_s
        while True:
            now = time.monotonic()
            while sent and now - sent[0] >= window_s:
                sent.popleft()
            if len(sent) < self.control_room(per_s, window_s):
                break
            await asyncio.sleep(sent[0] + window_s - now)
        sent.append(now)
        self.control_sent += 1
        await self._ws.send_str(text)

    async def close(self) -> None:
        """Close politely: the close handshake (at most ``CLOSE_TIMEOUT_S``), then the
        socket. A reader in ``receive`` gets None."""
        try:
            await self._ws.close()
        finally:
            await self._session.close()

    def abort(self) -> None:
        """Drop the socket without waiting (our close was cancelled or failed). aiohttp's
        own close already drops it on a timeout or a cancellation of the handshake; this
        covers the rest, closing the session (its socket) in a task of its own."""
        if self._session.closed:
            return
        task = asyncio.get_running_loop().create_task(self._session.close())
        _closing.add(task)  # a strong reference until done
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


def control_messages(
    method: str,
    streams: Sequence[str],
    ids: Iterator[int],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[str]:
    """``method`` (SUBSCRIBE / UNSUBSCRIBE) messages for ``streams``, each at most
    ``max_bytes`` of JSON (a stream name alone over it still goes, alone)."""
    out: list[str] = []
    chunk: list[str] = []
    size = 0
    for stream in streams:
        cost = len(msgspec.json.encode(stream)) + 1  # quoted, and a comma
        if chunk and size + cost > max_bytes:
            out.append(_message(method, chunk, next(ids)))
            chunk, size = [], 0
        if not chunk:
            size = len(_message(method, [], 2**63 - 1).encode())  # the frame, largest id
        chunk.append(stream)
        size += cost
    if chunk:
        out.append(_message(method, chunk, next(ids)))
    return out


def _message(method: str, params: list[str], rid: int) -> str:
    return msgspec.json.encode({"method": method, "params": params, "id": rid}).decode()


def url_streams(base: str, streams: Sequence[str], max_bytes: int = MAX_URL_BYTES) -> int:
    """How many of ``streams`` (at least one) fit in ``base?streams=a/b/...`` within
    ``max_bytes``; the rest go by SUBSCRIBE."""
    size = len(base) + len("?streams=")
    for n, stream in enumerate(streams):
        size += len(stream) + (1 if n else 0)
        if size > max_bytes:
            return max(1, n)
    return len(streams)


def rotation_age_s(
    index: int,
    rotate_after_s: float,
    spread_s: float,
    rng: random.Random | None = None,
) -> float:
    """The age at which connection ``index`` is replaced: its slot in the last
    ``spread_s`` before ``rotate_after_s`` (at most half of it), less a jitter of up to a
    twentieth of the spread (or 60 s), so neighbours in time are never in step."""
    spread = min(spread_s, rotate_after_s / 2)
    slot = (index * _GOLDEN) % 1.0
    jitter = (rng or random).uniform(0.0, min(60.0, spread / 20))
    return max(0.0, rotate_after_s - spread * slot - jitter)
