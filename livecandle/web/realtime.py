"""socket.io: rooms per symbol and per series, fed from Redis pub/sub, throttled.

Client -> server: ``subscribe {symbol, interval}`` / ``unsubscribe {symbol, interval}``
(unknown pairs get an ``error`` event). Server -> client: ``live_price {symbol, price,
time}`` (room ``SYMBOL``), ``live_candle {symbol, interval, candle, previous}`` (room
``SYMBOL:interval``) and ``klines_updated {symbol, interval, latest}`` (same room).
Live events are coalesced per room: at most one per ``emit_period_ms`` (default 10 ms,
the newest state), so a burst of trades cannot flood a browser. A client that does not
drain its queue is disconnected (``client_queue``: at most ``max_queue_packets`` waiting,
none waiting longer than ``stall_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import socketio
from socketio.packet import EVENT

from livecandle.domain.clock import Clock
from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from livecandle.web.client_queue import ClientQueues, LatestPacket
from livecandle.web.errors import shown_repr

log = logging.getLogger(__name__)


class _Json:
    """The ``json`` python-socketio uses, by msgspec (several times faster)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return msgspec.json.encode(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return msgspec.json.decode(text)


class TextPacket(socketio.packet.Packet):  # type: ignore[misc]
    """Our events never carry binary attachments: skip the per-emit recursive scan."""

    json = _Json

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return False


class _Batch(msgspec.Struct):
    """A live batch message (LiveWriter): its values left encoded."""

    prices: list[msgspec.Raw] = []
    candles: list[msgspec.Raw] = []


class _Head(msgspec.Struct):
    """What says whose a price or a candle is (the other fields are skipped)."""

    symbol: str
    interval: str = ""


_batch = msgspec.json.Decoder(_Batch)
# klines_updated notices handled between two turns of the event loop, at most
NOTICES_PER_TURN = 100
_head = msgspec.json.Decoder(_Head)


class Realtime:
    def __init__(
        self,
        store: Store,
        symbols: Iterable[str],
        intervals: Iterable[Interval],
        clock: Clock,
        emit_period_ms: int = 10,
        redis_url_for_manager: str | None = None,
        max_queue_packets: int = 256,
        stall_s: float = 30.0,
        cors_allowed_origins: Any = None,  # engine.io's None: the page's own origin only
        max_message_bytes: int = 64 * 1024,  # our messages are tiny (issue 14)
    ) -> None:
        intervals = tuple(intervals)
        self.store = store
        self.clock = clock
        self.symbols: set[str] = set()
        self._intervals = intervals
        self.intervals = {i.name for i in intervals}
        # room name (``str(SeriesKey)``) of every served series, by (symbol, interval name)
        self._series_rooms: dict[tuple[str, str], str] = {}
        self.serve_symbols(symbols)
        self.emit_period_ms = emit_period_ms
        manager = (
            socketio.AsyncRedisManager(redis_url_for_manager) if redis_url_for_manager else None
        )
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=cors_allowed_origins,
            max_http_buffer_size=max_message_bytes,
            client_manager=manager,
            serializer=TextPacket,
            logger=False,
            engineio_logger=False,
        )
        # every client's queue, on either path (ours or the client manager's)
        self.queues = ClientQueues(self.sio.eio, max_queue_packets, stall_s)
        self._direct = manager is None  # one process: send to each client ourselves
        self._pending: dict[tuple[str, str], Any] = {}
        self._wake = asyncio.Event()
        self.emitted = 0
        self.received = 0
        self.clients = 0
        self.last_message_ms: int | None = None
        self.listening = asyncio.Event()  # both subscriptions confirmed by Redis (once)
        self._subscriptions = 0
        self._register()

    def _register(self) -> None:
        sio = self.sio

        @sio.event  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            self.clients += 1

        @sio.event  # type: ignore[untyped-decorator]
        async def disconnect(sid: str, *args: Any) -> None:
            self.clients -= 1

        @sio.event  # type: ignore[untyped-decorator]
        async def subscribe(sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
            series, error = self._series(data, extra)
            if series is None:
                await sio.emit("error", {"event": "subscribe", "error": error}, to=sid)
                return {"ok": False, "error": error}
            room = str(series)
            await sio.enter_room(sid, room)
            await sio.enter_room(sid, series.symbol)
            return {"ok": True, "room": room}

        @sio.event  # type: ignore[untyped-decorator]
        async def unsubscribe(sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
            series, error = self._series(data, extra)
            if series is None:
                await sio.emit("error", {"event": "unsubscribe", "error": error}, to=sid)
                return {"ok": False, "error": error}
            room = str(series)
            await sio.leave_room(sid, room)
            same_symbol = {str(SeriesKey(series.symbol, INTERVALS[i])) for i in self.intervals}
            if not same_symbol.intersection(sio.rooms(sid)):
                await sio.leave_room(sid, series.symbol)
            return {"ok": True, "room": room}

    def serve_symbols(self, symbols: Iterable[str]) -> None:
        """The served symbols (with patterns they change as the universe does); rooms
        of symbols no longer served stay as they are (their clients see no updates)."""
        self.symbols = set(symbols)
        rooms = self._series_rooms
        for s in self.symbols:
            for i in self._intervals:
                if (s, i.name) not in rooms:
                    rooms[(s, i.name)] = str(SeriesKey(s, i))

    def _series(self, data: Any, extra: tuple[Any, ...] = ()) -> tuple[SeriesKey | None, str]:
        """(the series, "") for a valid request, else (None, why); never raises."""
        if extra:
            return None, f"expected one argument {{symbol, interval}}, got {1 + len(extra)}"
        if not isinstance(data, dict):
            return None, f"expected an object {{symbol, interval}}, got {type(data).__name__}"
        symbol, interval = data.get("symbol"), data.get("interval")
        if not isinstance(symbol, str) or symbol.upper() not in self.symbols:
            many = len(self.symbols) > 20  # named when few, counted when many
            served = (
                f"{len(self.symbols)} symbols, listed by /api/symbols"
                if many
                else ", ".join(sorted(self.symbols))
            )
            return None, f"unknown symbol {shown_repr(symbol)} (served: {served})"
        if not isinstance(interval, str) or interval not in INTERVALS:
            return None, f"unknown interval {shown_repr(interval)}"
        if interval not in self.intervals:
            served = ", ".join(sorted(self.intervals))
            return None, f"interval {shown_repr(interval)} is not served (served: {served})"
        return SeriesKey(symbol.upper(), INTERVALS[interval]), ""

    async def listen(self) -> None:
        """Both subscriptions (``listen_live`` and ``listen_notices``) in one task."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.listen_live(), name="realtime-live")
            tasks.create_task(self.listen_notices(), name="realtime-notices")

    async def listen_live(self) -> None:
        """Redis pub/sub live batches -> pending emissions (the flusher sends them). On a
        subscription of its own: a burst of notices (at 00:00 UTC the whole market's
        9,600, one per series stored) is not read ahead of the live batches."""
        messages = self.store.listen(self.store.keys.live_channel, subscribed=self._subscribed)
        async with contextlib.aclosing(messages):  # its connection closed when cancelled
            async for _, raw in messages:
                self.received += 1
                self.last_message_ms = self.clock.now_ms()
                try:
                    batch = _batch.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                self._queue_batch(batch)

    async def listen_notices(self) -> None:
        """``klines_updated`` notices to their series' room, if somebody is in it; the
        event loop turns every ``NOTICES_PER_TURN`` (a burst arrives in one read)."""
        channel = self.store.keys.klines_updated_channel
        messages = self.store.listen(channel, subscribed=self._subscribed)
        n = 0
        async with contextlib.aclosing(messages):  # its connection closed when cancelled
            async for _, raw in messages:
                self.received += 1
                self.last_message_ms = self.clock.now_ms()
                n += 1
                if n % NOTICES_PER_TURN == 0:
                    await asyncio.sleep(0)
                try:
                    head = _head.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                room = self._series_rooms.get((head.symbol, head.interval))
                if room is None:  # another deployment's series: nobody is in its room
                    continue
                if self._direct and room not in self.sio.manager.rooms.get("/", {}):
                    continue  # nobody here watches it (decoded whole only if watched)
                try:
                    data = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    continue
                await self.emit("klines_updated", data, room)

    def _subscribed(self) -> None:
        self._subscriptions += 1
        if self._subscriptions >= 2:
            self.listening.set()

    def _queue_batch(self, batch: _Batch) -> None:
        """The batch's prices and candles of the series somebody watches. At market
        scale a batch holds thousands of values, few of them watched: each is read for
        its symbol and interval alone, and decoded whole only if watched."""
        rooms = self.sio.manager.rooms.get("/", {})  # only rooms somebody is in
        for raw in batch.prices:
            try:
                head = _head.decode(raw)
                if head.symbol in rooms:
                    self._pend(("live_price", head.symbol), msgspec.json.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        for raw in batch.candles:
            try:
                head = _head.decode(raw)
                room = self._series_rooms.get((head.symbol, head.interval))
                if room is None or room not in rooms:
                    continue
                c = msgspec.json.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            previous = c.get("previous")
            candle = {k: v for k, v in c.items() if k != "previous"}
            self._pend(
                ("live_candle", room),
                {
                    "symbol": c["symbol"],
                    "interval": c["interval"],
                    "candle": candle,
                    "previous": previous,
                },
            )
        self._wake.set()

    def _pend(self, key: tuple[str, str], payload: Any) -> None:
        """The newest event of a room, emitted in the order of the newest events: a
        price that came after a candle of its symbol goes after it, even when an older
        price of the symbol was pending before that candle (the candle's close would
        otherwise be shown last, older than the price)."""
        pending = self._pending
        pending.pop(key, None)
        pending[key] = payload

    async def flush_loop(self) -> None:
        period_s = self.emit_period_ms / 1000
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for (event, room), payload in pending.items():
                await self.emit(event, payload, room)
            await asyncio.sleep(period_s)

    @property
    def slow_clients_dropped(self) -> int:
        return self.queues.dropped

    async def emit(self, event: str, payload: Any, room: str) -> None:
        """``sio.emit`` to a room, without its task per recipient: the packet and its
        WebSocket frame are built once; a websocket client with nothing waiting gets the
        frame written at once, any other has the packet queued on its Engine.IO socket
        (which has its own writer; ``client_queue``)."""
        self.emitted += 1
        if not self._direct:
            await self.sio.emit(event, payload, room=room)
            return
        participants = list(self.sio.manager.get_participants("/", room))
        if not participants:
            return
        encoded = self.sio.packet_class(EVENT, namespace="/", data=[event, payload]).encode()
        # newest state wins per room; a symbol's rooms keep the order of their newest
        packet = LatestPacket(encoded, (event, room), room.partition(":")[0])
        sockets = self.sio.eio.sockets
        for _, eio_sid in participants:
            socket = sockets.get(eio_sid)
            if socket is None or not socket.queue.write_through(packet):
                await self.sio._send_eio_packet(eio_sid, packet)
