"""Every socket.io client's outgoing queue: bounded, newest state coalesced, slow clients
disconnected.

Engine.IO keeps one ``asyncio.Queue`` per client and, without a bound, a client that
stops draining it (a long-polling client that never polls again but keeps its session
alive with pongs) makes the server buffer every event for it forever. Here each client's
queue is a ``ClientQueue``:

- a ``LatestPacket`` (live prices and candles, "klines updated": newest state wins per
  room) replaces a queued one with the same key in place, so a client that lags gets the
  newest state and its queue does not grow with the update rate;
- a client whose queue holds ``max_packets`` other packets (or more rooms' newest states
  than any client can be in), or which took nothing for ``stall_s`` while something was
  waiting, is disconnected (logged once, counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from engineio.packet import CLOSE, MESSAGE
from engineio.packet import Packet as EngineIOPacket

log = logging.getLogger(__name__)

# newest-state packets (one per room) a client may have waiting, per ``max_packets``:
# 256 x 64 = 16,384 rooms, more than every series of the whole market
LATEST_PER_PACKET = 64


class LatestPacket(EngineIOPacket):  # type: ignore[misc]
    """A packet carrying the newest state of ``key``: a queued one with the same key is
    obsolete and is replaced by this one."""

    def __init__(self, encoded: str, key: Hashable) -> None:
        super().__init__(MESSAGE, encoded)
        self.key = key


def _always_passes(item: Any) -> bool:
    """Engine.IO's own end-of-stream markers: the writer must see them to finish."""
    return item is None or (isinstance(item, EngineIOPacket) and item.packet_type == CLOSE)


class ClientQueue(asyncio.Queue[Any]):
    """One client's packets. Stored as one-element lists (cells), so a newer
    ``LatestPacket`` can take an older one's place without searching the queue."""

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
        self._latest: dict[Hashable, list[Any]] = {}  # key -> its queued cell
        self._taken_s = clock_s()  # the client last took a packet (or the queue filled)
        self.slow = False

    def put_nowait(self, item: Any) -> None:
        if _always_passes(item):
            super().put_nowait([item])
            return
        if self.slow:
            return  # being disconnected: nothing more is kept for it
        now_s = self._clock_s()
        if not self.empty() and now_s - self._taken_s > self.stall_s:
            self._mark_slow(f"took nothing for {self.stall_s:g} s")
            return
        key = item.key if isinstance(item, LatestPacket) else None
        if key is not None and (cell := self._latest.get(key)) is not None:
            cell[0] = item  # still queued: the newest state takes its place
            return
        # newest-state packets are bounded by the client's rooms (one per key), so a
        # client in many rooms is not cut off by one burst; the rest by ``max_packets``
        latest = len(self._latest)
        if key is None and self.qsize() - latest >= self.max_packets:
            self._mark_slow(f"{self.max_packets} packets waiting")
            return
        if key is not None and latest >= self.max_packets * LATEST_PER_PACKET:
            self._mark_slow(f"{latest} rooms' updates waiting")
            return
        if self.empty():
            self._taken_s = now_s  # the stall is measured from the oldest waiting packet
        cell = [item]
        if key is not None:
            self._latest[key] = cell
        super().put_nowait(cell)

    def _get(self) -> Any:
        cell = super()._get()
        item = cell[0]
        if isinstance(item, LatestPacket) and self._latest.get(item.key) is cell:
            del self._latest[item.key]
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
        self._latest.clear()
        super().put_nowait([None])


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
