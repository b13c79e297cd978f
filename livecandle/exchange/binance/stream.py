"""Binance websocket market streams: connections, subscriptions, reconnects, rotation.

Raw messages go into a queue; nothing here decodes them, so a slow consumer never stalls
the socket. Rules kept (``reference/binance-api.md`` section 3, the limits themselves in
``stream_limits``): combined streams ``/stream?streams=a/b`` with short URLs, at most 1024
streams per connection, SUBSCRIBE / UNSUBSCRIBE messages cut by size and paced with our
pongs under 5 messages a second per connection, server pings answered as they are read,
messages up to 4 MiB, every connection attempt of the process taken from one
``ConnectionAttempts`` budget (300 per 5 minutes per IP). The sockets are aiohttp's, without
compression: its C frame parser costs less than half the CPU a message of the websockets
library's pure-Python one, which dominated the stream process on the whole market. A
connection lives at most 24 h: it is replaced before that with overlap (duplicates are
dropped downstream by id), at an age staggered per connection so that they do not all
reconnect at once; reconnects after a cut are spread by jitter too. A connection silent
for too long is replaced; one left without streams (every stream unsubscribed) closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from livecandle.backoff import Backoff, delay_s
from livecandle.exchange.binance.stream_limits import (
    MAX_MESSAGE_BYTES,
    MAX_URL_BYTES,
    OPEN_ERRORS,
    ConnectionAttempts,
    ControlledConnection,
    MemoryConnectionAttempts,
    control_messages,
    rotation_age_s,
    url_streams,
)

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024


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
    index: int
    streams: list[str]
    stats: ConnStats
    ws: ControlledConnection | None = None
    rotate_age_s: float = 0.0
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
        attempts: ConnectionAttempts | None = None,
        rotate_spread_s: float = 3 * 3600,
        reconnect_spread_s: float = 0.25,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_url_bytes: int = MAX_URL_BYTES,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.queue = queue
        self.max_streams = max_streams
        # the latest age of a planned replacement; each connection's is staggered over
        # the ``rotate_spread_s`` before it (stream_limits.rotation_age_s)
        self.rotate_after_s = rotate_after_s
        self.rotate_spread_s = rotate_spread_s
        # a reconnect after a cut waits up to this much per connection of the process
        # more, at random: a mass cut is not followed by a mass reconnect
        self.reconnect_spread_s = reconnect_spread_s
        self.max_message_bytes = max_message_bytes
        self.max_url_bytes = max_url_bytes
        # every connection attempt of the process (of the IP, once shared) takes one
        self.attempts: ConnectionAttempts = attempts or MemoryConnectionAttempts()
        self.silence_s = silence_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.open_timeout_s = open_timeout_s
        self.groups: list[_Group] = []
        self._ids = itertools.count(1)
        self._indexes = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._tasks_changed = asyncio.Event()
        self._running = False
        self.reconnects = 0
        self.connected = asyncio.Event()
        for chunk in _chunks(list(dict.fromkeys(streams)), max_streams):
            self._add_group(chunk)

    def _add_group(self, streams: list[str]) -> _Group:
        index = next(self._indexes)
        name = f"conn{index}"
        group = _Group(name, index, list(streams), ConnStats(name, len(streams)))
        group.rotate_age_s = rotation_age_s(index, self.rotate_after_s, self.rotate_spread_s)
        self.groups.append(group)
        return group

    def _start(self, group: _Group) -> None:
        self._tasks.append(asyncio.create_task(self._keep(group), name=group.name))
        self._tasks_changed.set()

    # -- public -------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep every connection up until cancelled (connections added later by
        ``subscribe`` too; one that fails unexpectedly fails the whole)."""
        self._running = True
        for g in self.groups:
            self._start(g)
        try:
            while True:
                self._tasks_changed.clear()
                for t in [t for t in self._tasks if t.done()]:
                    self._tasks.remove(t)
                    if not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                changed = asyncio.ensure_future(self._tasks_changed.wait())
                try:
                    await asyncio.wait([*self._tasks, changed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
        finally:
            self._running = False
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
            if not new or room <= 0 or g.stats.state == ConnState.CLOSED:
                continue
            take, new = new[:room], new[room:]
            g.streams.extend(take)
            g.stats.streams = len(g.streams)
            # unsubscribed and not yet sent: then nothing to send at all
            back = set(take) & set(g.pending_unsubscribe)
            g.pending_unsubscribe = [s for s in g.pending_unsubscribe if s not in back]
            g.pending_subscribe.extend(s for s in take if s not in back)
            g.wake.set()
        for chunk in _chunks(new, self.max_streams):
            group = self._add_group(chunk)
            if self._running:
                self._start(group)

    def unsubscribe(self, streams: Sequence[str]) -> None:
        """Stop streams at run time (a symbol that left TRADING): UNSUBSCRIBE on the
        connection carrying each; a connection left without streams closes."""
        gone = set(streams)
        for g in list(self.groups):
            drop = [s for s in g.streams if s in gone]
            if not drop:
                continue
            g.streams = [s for s in g.streams if s not in gone]
            g.stats.streams = len(g.streams)
            # subscribed and not yet sent: then nothing to send at all
            unsent = set(drop) & set(g.pending_subscribe)
            g.pending_subscribe = [s for s in g.pending_subscribe if s not in unsent]
            g.pending_unsubscribe.extend(s for s in drop if s not in unsent)
            g.wake.set()
            if not g.streams and not self._running:  # nothing to close
                self.groups.remove(g)

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
                "rotates_in_s": round(g.stats.opened + g.rotate_age_s - now, 1)
                if g.ws is not None
                else None,
                "control_sent": g.ws.control_sent if g.ws is not None else 0,
                "last_error": g.stats.last_error,
            }
            for g in self.groups
        ]

    def attempt_stats(self) -> dict[str, Any]:
        """The connection-attempt budget's state."""
        return self.attempts.stats()

    async def drop(self, symbol: str | None = None) -> None:
        """Close the sockets carrying ``symbol``'s streams (every socket without one);
        they reconnect: a resync after a detected loss. Only those: every symbol of a
        dropped connection needs its missed trades fetched again."""
        prefix = f"{symbol.lower()}@" if symbol is not None else ""
        for g in self.groups:
            if g.ws is not None and any(s.startswith(prefix) for s in g.streams):
                await g.ws.close()

    # -- one connection -----------------------------------------------------------------

    async def _open(
        self, group: _Group, first: asyncio.Event | None = None
    ) -> tuple[ControlledConnection, asyncio.Task[None]]:
        """A new socket carrying the group's streams: as many as a short URL holds, the
        rest by SUBSCRIBE; and its reader, started at once (it answers the pings, so
        they are answered while the SUBSCRIBEs are paced). Waits for a connection attempt
        of the budget first."""
        await self.attempts.take()
        streams = list(group.streams)
        base = f"{self.ws_url}/stream"
        n = url_streams(base, streams, self.max_url_bytes)
        ws = await ControlledConnection.open(
            f"{base}?streams={'/'.join(streams[:n])}", self.open_timeout_s
        )
        reader = asyncio.create_task(self._read(ws, group.stats, self.queue, first))
        try:
            await self._send_control(ws, streams[n:])
        except BaseException:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await _close(ws)
            raise
        # the new socket carries ``streams``: pending changes are those made since
        carried = set(streams)
        group.pending_subscribe = [s for s in group.pending_subscribe if s not in carried]
        group.pending_unsubscribe = [s for s in group.pending_unsubscribe if s in carried]
        return ws, reader

    async def _send_control(
        self, ws: ControlledConnection, streams: list[str], method: str = "SUBSCRIBE"
    ) -> None:
        """SUBSCRIBE (or UNSUBSCRIBE) ``streams`` in messages of at most
        ``max_message_bytes``, paced with the pongs under the server's message limit."""
        for text in control_messages(method, streams, self._ids, self.max_message_bytes):
            await ws.send_control(text)

    async def _keep(self, group: _Group) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        stats = group.stats
        handed: tuple[ControlledConnection, asyncio.Task[None]] | None = None
        while True:
            if not group.streams:  # every stream unsubscribed: this connection ends
                stats.state = ConnState.CLOSED
                if group in self.groups:
                    self.groups.remove(group)
                log.info("%s: no streams left, closed", group.name)
                return
            if handed is None:
                stats.state = ConnState.CONNECTING
                try:
                    ws, reader = await self._open(group)
                except OPEN_ERRORS as e:
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
                stats.connects += 1
                if stats.connects > 1:
                    self.reconnects += 1
            else:
                ws, reader = handed
            backoff.reset()
            group.ws = ws
            stats.state = ConnState.OPEN
            stats.opened = stats.last_message = time.monotonic()
            group.rotate_age_s = rotation_age_s(
                group.index, self.rotate_after_s, self.rotate_spread_s
            )
            self.connected.set()
            handed, reason = await self._serve(group, ws, reader)
            stats.last_error = None if handed else reason
            log.info("%s: %s", group.name, reason)
            if handed is None and reason.startswith("closed"):
                stats.state = ConnState.BACKOFF
                # spread over the connections of the process: a mass cut (the server
                # restarts, the 24 h mark) is not followed by a mass reconnect
                spread_s = self.reconnect_spread_s * len(self.groups)
                await asyncio.sleep(
                    delay_s(1, self.backoff_base_s, self.backoff_cap_s)
                    + random.uniform(0.0, spread_s)
                )

    async def _serve(
        self, group: _Group, ws: ControlledConnection, reader: asyncio.Task[None]
    ) -> tuple[tuple[ControlledConnection, asyncio.Task[None]] | None, str]:
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
                if not group.streams:
                    return None, "no streams left"
                if group.pending_unsubscribe:
                    todo, group.pending_unsubscribe = group.pending_unsubscribe, []
                    await self._send_control(ws, todo, "UNSUBSCRIBE")
                if group.pending_subscribe:
                    todo, group.pending_subscribe = group.pending_subscribe, []
                    await self._send_control(ws, todo)
                now = time.monotonic()
                if now - stats.last_message > self.silence_s:
                    stats.silences += 1
                    return None, f"silent for {now - stats.last_message:.1f} s: reconnecting"
                if now - stats.opened > group.rotate_age_s:
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
        ws: ControlledConnection,
        stats: ConnStats,
        queue: asyncio.Queue[str | bytes],
        first: asyncio.Event | None = None,
    ) -> None:
        put = queue.put_nowait
        receive = ws.receive
        while (message := await receive()) is not None:
            stats.messages += 1
            stats.last_message = time.monotonic()
            put(message)
            if first is not None:
                first.set()
                first = None

    async def _rotate(
        self, group: _Group
    ) -> tuple[ControlledConnection, asyncio.Task[None]] | None:
        """Open the replacement while the old socket still reads; hand over once the new
        one has delivered a message, so nothing falls between the two (the overlap's
        duplicates are dropped downstream by id)."""
        stats = group.stats
        stats.rotations += 1
        try:
            # the old socket still reads, but nothing else of it is served meanwhile: a
            # rotation waiting long for a connection attempt is tried again later
            first = asyncio.Event()
            async with asyncio.timeout(2 * self.open_timeout_s):
                new, reader = await self._open(group, first)
        except OPEN_ERRORS as e:
            log.warning("%s: rotation failed (%r); keeping the old socket", group.name, e)
            stats.opened = time.monotonic() - group.rotate_age_s + 30  # retry in 30 s
            return None
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
            stats.opened = time.monotonic() - group.rotate_age_s + 30
            return None


async def _close(ws: ControlledConnection) -> None:
    """Close politely (bounded); if that fails or is cancelled, drop the transport, so a
    socket never outlives its connection object."""
    try:
        async with asyncio.timeout(2):
            await ws.close()
    except asyncio.CancelledError:
        ws.abort()
        raise
    except Exception:  # a peer that does not answer the close handshake
        ws.abort()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
