"""Binance websocket market streams: connections, subscriptions, reconnects, rotation.

Raw messages go into a queue; nothing here decodes them, so a slow consumer never stalls
the socket. Rules kept (``reference/binance-api.md`` section 3): combined streams
``/stream?streams=a/b``, at most 1024 streams and 5 incoming messages per second per
connection, server pings answered (by the websockets library), a connection lives at
most 24 h: it is replaced before that with overlap (duplicates are dropped downstream by
id), and a connection silent for too long is replaced too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from livecandle.backoff import Backoff, delay_s

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024
MAX_URL_STREAMS = 200  # more go through SUBSCRIBE (keeps URLs short)
CONTROL_MESSAGES_PER_S = 4  # Binance closes a connection above 5 (pongs count too)


class ConnState(StrEnum):
    CONNECTING = "connecting"
    OPEN = "open"
    BACKOFF = "backoff"
    CLOSED = "closed"


@dataclass
class ConnStats:
    name: str
    streams: int = 0
    state: ConnState = ConnState.CONNECTING
    connects: int = 0
    messages: int = 0
    last_message: float = 0.0
    opened: float = 0.0
    rotations: int = 0
    silences: int = 0
    last_error: str | None = None


@dataclass
class _Group:
    """The streams one logical connection carries (one socket, two while rotating)."""

    name: str
    streams: list[str]
    stats: ConnStats
    ws: ClientConnection | None = None
    pending_subscribe: list[str] = field(default_factory=list)
    pending_unsubscribe: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class BinanceStream:
    def __init__(
        self,
        ws_url: str,
        streams: Sequence[str],
        queue: asyncio.Queue[str | bytes],
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        rotate_after_s: float = 23.5 * 3600,
        silence_s: float = 10.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 15.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.queue = queue
        self.max_streams = max_streams
        self.rotate_after_s = rotate_after_s
        self.silence_s = silence_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.open_timeout_s = open_timeout_s
        self.groups: list[_Group] = []
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self.reconnects = 0
        self.connected = asyncio.Event()
        for chunk in _chunks(list(dict.fromkeys(streams)), max_streams):
            self._add_group(chunk)

    def _add_group(self, streams: list[str]) -> _Group:
        name = f"conn{len(self.groups)}"
        group = _Group(name, list(streams), ConnStats(name, len(streams)))
        self.groups.append(group)
        return group

    # -- public -------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep every connection up until cancelled."""
        self._tasks = [asyncio.create_task(self._keep(g), name=g.name) for g in self.groups]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def subscribe(self, streams: Sequence[str]) -> None:
        """Add streams at run time (new symbols): SUBSCRIBE on a connection with room,
        or a new connection."""
        known = {s for g in self.groups for s in g.streams}
        new = [s for s in dict.fromkeys(streams) if s not in known]
        for g in self.groups:
            room = self.max_streams - len(g.streams)
            if not new or room <= 0:
                continue
            take, new = new[:room], new[room:]
            g.streams.extend(take)
            g.stats.streams = len(g.streams)
            g.pending_subscribe.extend(take)
            g.wake.set()
        for chunk in _chunks(new, self.max_streams):
            group = self._add_group(chunk)
            if self._tasks:
                self._tasks.append(asyncio.create_task(self._keep(group), name=group.name))

    def unsubscribe(self, streams: Sequence[str]) -> None:
        """Stop streams at run time (a symbol that left TRADING): UNSUBSCRIBE on the
        connection carrying each; a connection left without streams closes."""
        gone = set(streams)
        for g in self.groups:
            drop = [s for s in g.streams if s in gone]
            if not drop:
                continue
            g.streams = [s for s in g.streams if s not in gone]
            g.stats.streams = len(g.streams)
            g.pending_subscribe = [s for s in g.pending_subscribe if s not in gone]
            g.pending_unsubscribe.extend(drop)
            g.wake.set()

    def stats(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "name": g.stats.name,
                "state": g.stats.state.value,
                "streams": g.stats.streams,
                "connects": g.stats.connects,
                "rotations": g.stats.rotations,
                "silences": g.stats.silences,
                "messages": g.stats.messages,
                "silent_for_s": round(now - g.stats.last_message, 3)
                if g.stats.last_message
                else None,
                "last_error": g.stats.last_error,
            }
            for g in self.groups
        ]

    async def drop(self) -> None:
        """Close every socket (they reconnect): for a resync after a detected loss."""
        for g in self.groups:
            if g.ws is not None:
                await g.ws.close()

    # -- one connection -----------------------------------------------------------------

    def _url(self, streams: list[str]) -> str:
        return f"{self.ws_url}/stream?streams={'/'.join(streams[:MAX_URL_STREAMS])}"

    async def _open(self, group: _Group) -> ClientConnection:
        ws = await websockets.connect(
            self._url(group.streams),
            open_timeout=self.open_timeout_s,
            ping_interval=None,  # the server pings; the library answers with pongs
            max_size=2**22,
            max_queue=None,
            compression=None,
        )
        try:
            await self._send_subscribe(ws, group.streams[MAX_URL_STREAMS:])
        except BaseException:
            await _close(ws)
            raise
        return ws

    async def _send_subscribe(
        self, ws: ClientConnection, streams: list[str], method: str = "SUBSCRIBE"
    ) -> None:
        for chunk in _chunks(streams, 200):
            await ws.send(
                msgspec.json.encode(
                    {"method": method, "params": chunk, "id": next(self._ids)}
                ).decode()
            )
            await asyncio.sleep(1 / CONTROL_MESSAGES_PER_S)

    async def _keep(self, group: _Group) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        stats = group.stats
        handed: tuple[ClientConnection, asyncio.Task[None]] | None = None
        while True:
            if handed is None:
                stats.state = ConnState.CONNECTING
                try:
                    ws = await self._open(group)
                except (OSError, websockets.WebSocketException, TimeoutError) as e:
                    delay = backoff.next_s()
                    stats.last_error = f"{type(e).__name__}: {e}"
                    stats.state = ConnState.BACKOFF
                    # said once per outage; the retries that follow are debug noise
                    level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
                    log.log(
                        level, "%s: cannot connect to %s (%s); retrying", group.name, self.ws_url, e
                    )
                    await asyncio.sleep(delay)
                    continue
                reader = asyncio.create_task(self._read(ws, stats, self.queue))
                stats.connects += 1
                if stats.connects > 1:
                    self.reconnects += 1
            else:
                ws, reader = handed
            backoff.reset()
            group.ws = ws
            stats.state = ConnState.OPEN
            stats.opened = stats.last_message = time.monotonic()
            self.connected.set()
            handed, reason = await self._serve(group, ws, reader)
            stats.last_error = None if handed else reason
            log.info("%s: %s", group.name, reason)
            if handed is None and reason.startswith("closed"):
                stats.state = ConnState.BACKOFF
                await asyncio.sleep(delay_s(1, self.backoff_base_s, self.backoff_cap_s))

    async def _serve(
        self, group: _Group, ws: ClientConnection, reader: asyncio.Task[None]
    ) -> tuple[tuple[ClientConnection, asyncio.Task[None]] | None, str]:
        """Serve one socket until it ends, goes silent or is rotated. Returns the
        replacement socket and its reader (rotation) or None, and why it ended."""
        stats = group.stats
        replacement = None
        try:
            while True:
                group.wake.clear()
                waker = asyncio.ensure_future(group.wake.wait())
                await asyncio.wait(
                    {reader, waker}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                waker.cancel()
                if reader.done():
                    exc = reader.exception()
                    return None, f"closed ({exc!r})" if exc else "closed by the server"
                if group.pending_subscribe:
                    todo, group.pending_subscribe = group.pending_subscribe, []
                    await self._send_subscribe(ws, todo)
                if group.pending_unsubscribe:
                    todo, group.pending_unsubscribe = group.pending_unsubscribe, []
                    await self._send_subscribe(ws, todo, "UNSUBSCRIBE")
                now = time.monotonic()
                if now - stats.last_message > self.silence_s:
                    stats.silences += 1
                    return None, f"silent for {now - stats.last_message:.1f} s: reconnecting"
                if now - stats.opened > self.rotate_after_s:
                    replacement = await self._rotate(group)
                    if replacement is not None:
                        return replacement, "rotated before the 24 h cut"
        finally:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await _close(ws)
            if group.ws is ws:
                group.ws = None

    @staticmethod
    async def _read(
        ws: ClientConnection,
        stats: ConnStats,
        queue: asyncio.Queue[str | bytes],
        first: asyncio.Event | None = None,
    ) -> None:
        put = queue.put_nowait
        async for message in ws:
            stats.messages += 1
            stats.last_message = time.monotonic()
            put(message)
            if first is not None:
                first.set()
                first = None

    async def _rotate(self, group: _Group) -> tuple[ClientConnection, asyncio.Task[None]] | None:
        """Open the replacement while the old socket still reads; hand over once the new
        one has delivered a message, so nothing falls between the two (the overlap's
        duplicates are dropped downstream by id)."""
        stats = group.stats
        stats.rotations += 1
        try:
            new = await self._open(group)
        except (OSError, websockets.WebSocketException, TimeoutError) as e:
            log.warning("%s: rotation failed (%s); keeping the old socket", group.name, e)
            stats.opened = time.monotonic() - self.rotate_after_s + 30  # retry in 30 s
            return None
        first = asyncio.Event()
        reader = asyncio.create_task(self._read(new, stats, self.queue, first))
        try:
            async with asyncio.timeout(self.silence_s):
                await first.wait()
            return new, reader
        except BaseException as e:  # a silent replacement, or we are being cancelled
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await _close(new)
            if not isinstance(e, TimeoutError):
                raise
            stats.opened = time.monotonic() - self.rotate_after_s + 30
            return None


async def _close(ws: ClientConnection) -> None:
    """Close politely (bounded); if that fails or is cancelled, drop the transport, so a
    socket never outlives its connection object."""
    try:
        async with asyncio.timeout(2):
            await ws.close()
    except asyncio.CancelledError:
        ws.transport.abort()
        raise
    except Exception:  # a peer that does not answer the close handshake
        ws.transport.abort()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
