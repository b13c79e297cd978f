"""Every socket.io client's outgoing queue: bounded, newest state coalesced, slow clients
disconnected.

Engine.IO keeps one ``asyncio.Queue`` per client and, without a bound, a client that
stops draining it (a long-polling client that never polls again but keeps its session
alive with pongs) makes the server buffer every event for it forever. Here each client's
queue is a ``ClientQueue``:

- a ``LatestPacket`` (live prices and candles, "klines updated": newest state wins per
  room) replaces a queued one with the same key, so a client that lags gets the newest
  state and its queue does not grow with the update rate. The packets of one group (a
  symbol: its price room and its series' rooms) wait together, in the client's queue
  where the group's first of them was put, and go in the order of their newest states
  (as ``Realtime`` emits them): a newer price that replaces a waiting older one goes
  after a candle of its symbol queued since, whose close may be older. Across groups
  the places hold, so a busy symbol does not push the others back;
- a client whose queue holds ``max_packets`` other packets (or more rooms' newest states
  than any client can be in), or which took nothing for ``stall_s`` while something was
  waiting, is disconnected (logged once, counted).

Fan-out (issue 13): a room's update reaches its members as one ``LatestPacket`` whose
WebSocket frame is built once. A websocket client whose queue is empty, whose engine.io
writer is idle and whose connection takes bytes now gets that frame written straight to
its transport (``ClientQueue.write_through``): no queue, writer wake-up, ``wait_for`` or
per-client framing and compression, which were most of the server's time per delivered
update. Any other client (polling, upgrading, something queued, its transport's buffer
above the high-water mark) takes the queue, so order is kept and the limits above hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

from engineio.async_drivers.asgi import WebSocket as AsgiWebSocket
from engineio.packet import CLOSE, MESSAGE
from engineio.packet import Packet as EngineIOPacket

log = logging.getLogger(__name__)

# newest-state packets (one per room) a client may have waiting, per ``max_packets``:
# 256 x 64 = 16,384 rooms, more than every series of the whole market
LATEST_PER_PACKET = 64


class LatestPacket(EngineIOPacket):  # type: ignore[misc]
    """A packet carrying the newest state of ``key``: a queued one with the same key is
    obsolete and is replaced by this one. The packets of one ``group`` (default: the key
    alone) go in the order of their newest states."""

    def __init__(self, encoded: str, key: Hashable, group: Hashable | None = None) -> None:
        super().__init__(MESSAGE, encoded)
        self.key = key
        self.group = key if group is None else group
        self.frame = text_frame(self.encode().encode())


class _Group(OrderedDict[Hashable, LatestPacket]):
    """One group's waiting packets by key, in the order of their newest states: one
    place in a client's queue."""


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, uncompressed server-to-client WebSocket text frame (RFC 6455
    5.2; RSV1 clear, so it is valid whether or not permessage-deflate was agreed)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class DirectWrites:
    """Raw writes to one client's WebSocket connection, beside the ASGI server's own.

    ``protocol`` is the server's connection object behind ``asgi.send`` (uvicorn's
    websockets-sansio and wsproto protocols: ``transport``, ``writable`` cleared while the
    transport's buffer is above its high-water mark, ``close_sent``); a server without
    them gets no direct writes. Every write is one whole frame from the event loop's one
    thread, so frames never interleave with the server's own."""

    def __init__(self, socket: Any, protocol: Any) -> None:
        self._socket = socket  # the engine.io socket: upgraded, not closing
        self._protocol = protocol
        # both are the connection's for its whole life (set before the app is called)
        self._writable = getattr(protocol, "writable", None)
        self._transport = getattr(protocol, "transport", None)
        self.usable = isinstance(self._writable, asyncio.Event) and self._transport is not None

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` now if the connection takes it without waiting; False if not."""
        socket = self._socket
        if (
            socket.closing
            or socket.closed
            or not socket.upgraded
            or socket.upgrading
            or not self._writable.is_set()  # type: ignore[union-attr]
            or self._protocol.close_sent
            or self._transport.is_closing()  # type: ignore[union-attr]
        ):
            return False
        self._transport.write(frame)  # type: ignore[union-attr]
        return True


class DirectWebSocket(AsgiWebSocket):  # type: ignore[misc]
    """engine.io's ASGI websocket that lends its client's queue a ``DirectWrites``."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        socket = getattr(self.handler, "__self__", None)  # the engine.io socket it serves
        queue = getattr(socket, "queue", None)
        protocol = getattr(environ.get("asgi.send"), "__self__", None)
        writes = DirectWrites(socket, protocol)
        if isinstance(queue, ClientQueue) and writes.usable:
            queue.direct = writes
        try:
            return await super().__call__(environ)
        finally:
            if isinstance(queue, ClientQueue):
                queue.direct = None


def _always_passes(item: Any) -> bool:
    """Engine.IO's own end-of-stream markers: the writer must see them to finish."""
    return item is None or (isinstance(item, EngineIOPacket) and item.packet_type == CLOSE)


class ClientQueue(asyncio.Queue[Any]):
    """One client's packets. The queue holds one-element lists (any other packet) and
    ``_Group``s (each group's newest states, found by group without searching the
    queue); ``qsize`` counts packets."""

    def __init__(
        self,
        max_packets: int,
        stall_s: float,
        on_slow: Callable[[ClientQueue, str], None],
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_packets = max_packets
        self.stall_s = stall_s
        self._on_slow = on_slow
        self._clock_s = clock_s
        self._latest: dict[Hashable, _Group] = {}  # group -> its place in the queue
        self._rooms = 0  # newest-state packets waiting (in every group)
        self._taken_s = clock_s()  # the client last took a packet (or the queue filled)
        self.slow = False
        self.direct: DirectWrites | None = None  # while the client is on a websocket
        self.written_through = 0
        self._waiting = 0  # the writer waits in ``get`` (it holds no packet it took)

    async def get(self) -> Any:
        self._waiting += 1
        try:
            return await super().get()
        finally:
            self._waiting -= 1

    def write_through(self, packet: LatestPacket) -> bool:
        """Write ``packet`` straight to the client's websocket if nothing can be sent before
        it: nothing queued and the writer idle (waiting in ``get``; a writer holding
        packets it took but has not sent yet is not). False: queue it instead."""
        direct = self.direct
        if direct is None or self.slow or not self.empty():
            return False
        if not self._waiting:
            return False
        if not direct.write(packet.frame):
            return False
        self.written_through += 1
        return True

    def _init(self, maxsize: int) -> None:
        # asyncio.Queue's store (its hooks: _init, _put, _get): cells and groups
        self._queue: deque[list[Any] | _Group] = deque()

    def qsize(self) -> int:
        return len(self._queue) - len(self._latest) + self._rooms

    def put_nowait(self, item: Any) -> None:
        if _always_passes(item):
            super().put_nowait(item)
            return
        if self.slow:
            return  # being disconnected: nothing more is kept for it
        now_s = self._clock_s()
        if not self.empty() and now_s - self._taken_s > self.stall_s:
            self._mark_slow(f"took nothing for {self.stall_s:g} s")
            return
        latest = isinstance(item, LatestPacket)
        if latest and (group := self._latest.get(item.group)) is not None and item.key in group:
            # still queued: the newest state replaces it, after the group's other states
            del group[item.key]
            group[item.key] = item
            return
        # newest-state packets are bounded by the client's rooms (one per key), so a
        # client in many rooms is not cut off by one burst; the rest by ``max_packets``
        if not latest and len(self._queue) - len(self._latest) >= self.max_packets:
            self._mark_slow(f"{self.max_packets} packets waiting")
            return
        if latest and self._rooms >= self.max_packets * LATEST_PER_PACKET:
            self._mark_slow(f"{self._rooms} rooms' updates waiting")
            return
        if self.empty():
            self._taken_s = now_s  # the stall is measured from the oldest waiting packet
        super().put_nowait(item)

    def _put(self, item: Any) -> None:
        if not isinstance(item, LatestPacket):
            self._queue.append([item])
            return
        group = self._latest.get(item.group)
        if group is None:
            group = self._latest[item.group] = _Group()
            self._queue.append(group)
        group[item.key] = item
        self._rooms += 1

    def _get(self) -> Any:
        head = self._queue[0]
        if isinstance(head, _Group):
            _, item = head.popitem(last=False)
            self._rooms -= 1
            if not head:  # the group's last: its place goes
                self._queue.popleft()
                del self._latest[item.group]
        else:
            item = self._queue.popleft()[0]
        self._taken_s = self._clock_s()
        return item

    def _mark_slow(self, why: str) -> None:
        self.slow = True
        self._on_slow(self, why)

    def discard(self) -> None:
        """Drop every waiting packet and wake the writer (or a waiting poll) to finish."""
        while not self.empty():
            self.get_nowait()
            self.task_done()
        super().put_nowait(None)


class ClientQueues:
    """Gives every Engine.IO socket of ``eio`` a ``ClientQueue`` (engine.io creates each
    socket's queue through ``server.create_queue()``) and disconnects the slow clients."""

    def __init__(self, eio: Any, max_packets: int = 256, stall_s: float = 30.0) -> None:
        if max_packets < 1 or stall_s <= 0:
            raise ValueError(f"bad limits: max_packets={max_packets}, stall_s={stall_s}")
        self._eio = eio
        self.max_packets = max_packets
        self.stall_s = stall_s
        self.dropped = 0
        self._closing: set[asyncio.Task[None]] = set()
        eio.create_queue = self._create
        if eio.async_mode == "asgi":
            # this server's own copy of its driver table: the module's is shared by all
            eio._async = {**eio._async, "websocket": DirectWebSocket}

    def _create(self, *args: Any, **kwargs: Any) -> ClientQueue:
        return ClientQueue(self.max_packets, self.stall_s, self._slow)

    def longest(self) -> int:
        """The most packets any client has waiting now."""
        return max((s.queue.qsize() for s in list(self._eio.sockets.values())), default=0)

    def _slow(self, queue: ClientQueue, why: str) -> None:
        sid = next((s for s, sock in self._eio.sockets.items() if sock.queue is queue), None)
        self.dropped += 1
        log.warning("socket.io client %s does not keep up (%s): disconnecting it", sid, why)
        # not here: we are inside somebody's send, maybe while it walks a room's members
        task = asyncio.get_running_loop().create_task(self._disconnect(sid, queue))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _disconnect(self, sid: str | None, queue: ClientQueue) -> None:
        socket = self._eio.sockets.get(sid) if sid is not None else None
        if socket is not None:
            # no wait: ``wait=True`` would wait for this very client to drain its queue
            await socket.close(wait=False, abort=True, reason=self._eio.reason.SERVER_DISCONNECT)
            self._eio.sockets.pop(sid, None)  # its next request is for an unknown session
        queue.discard()
