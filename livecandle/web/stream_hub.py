"""One upstream subscription per Binance stream, shared by every local consumer.

The hub keeps, per stream name, the local consumers reading it (websocket clients of
``stream_proxy``). The first consumer of a stream subscribes it upstream; the last one
leaving starts a linger (``linger_s``), after which the stream is unsubscribed upstream
unless a consumer came back meanwhile (a client reconnecting, a bot that unsubscribes
and subscribes again, costs the exchange nothing). The upstream side is the project's
``BinanceStream`` (combined connections within Binance's limits: 1024 streams per
connection, 5 messages a second, SUBSCRIBE messages cut by size, one budget of
connection attempts); it hands out each upstream frame unchanged. A frame is
``{"stream":..,"data":..}``: a combined consumer gets it as it came, a raw consumer the
payload sliced out of it, so every consumer gets Binance's exact bytes. Nothing of the
upstream runs while nobody consumes: the upstream tasks start with the first consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from livecandle.exchange.binance.stream import MAX_STREAMS_PER_CONNECTION, BinanceStream
from livecandle.exchange.binance.stream_limits import ConnectionAttempts
from livecandle.exchange.binance.stream_protocol import split_combined

log = logging.getLogger(__name__)


class Consumer(Protocol):
    """A local reader of streams: ``combined`` frames or raw payloads, never blocking."""

    @property
    def combined(self) -> bool: ...

    def deliver(self, frame: str) -> None: ...


class StreamHub:
    def __init__(
        self,
        ws_url: str,
        linger_s: float = 10.0,
        silence_s: float = 60.0,
        attempts: ConnectionAttempts | None = None,
        max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        max_upstream_streams: int = 20_000,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws_url = ws_url
        self.linger_s = linger_s
        # an upstream connection silent this long is replaced (BinanceStream): long,
        # since a proxied stream may be quiet (a kline of a symbol that rarely trades)
        self.silence_s = silence_s
        self.attempts = attempts
        self.max_streams_per_connection = max_streams_per_connection
        # every stream name is valid upstream, known symbol or not: without a cap, many
        # clients asking made-up names would open upstream connections without end
        self.max_upstream_streams = max_upstream_streams
        self._clock_s = clock_s
        self.consumers: dict[str, set[Consumer]] = {}
        self.upstream: set[str] = set()  # subscribed upstream (consumed or lingering)
        self.idle_since: dict[str, float] = {}  # upstream streams nobody consumes
        self.frames = 0  # upstream stream frames
        self.delivered = 0  # frames handed to consumers
        self.unclaimed = 0  # frames of a stream nobody consumes (lingering, in flight)
        self.upstream_errors = 0  # error answers of the upstream to our control messages
        self.subscribes = 0  # streams subscribed upstream, over time
        self.unsubscribes = 0
        self._stream: BinanceStream | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- consumers ----------------------------------------------------------------------

    def room_for(self, streams: Iterable[str]) -> bool:
        """Whether ``streams`` can be read without passing ``max_upstream_streams``
        (lingering streams count: they are still subscribed upstream)."""
        new = sum(1 for s in set(streams) if s not in self.upstream)
        return len(self.upstream) + new <= self.max_upstream_streams

    def join(self, consumer: Consumer, streams: Iterable[str]) -> None:
        """``consumer`` reads ``streams`` from now on (subscribing upstream those that
        nobody read and that do not linger)."""
        new: list[str] = []
        for s in streams:
            readers = self.consumers.get(s)
            if readers is None:
                readers = self.consumers[s] = set()
                self.idle_since.pop(s, None)
                if s not in self.upstream:
                    self.upstream.add(s)
                    new.append(s)
            readers.add(consumer)
        if new:
            self.subscribes += len(new)
            self._upstream().subscribe(new)

    def leave(self, consumer: Consumer, streams: Iterable[str]) -> None:
        """``consumer`` reads ``streams`` no more; a stream left without reader lingers."""
        now = self._clock_s()
        for s in streams:
            readers = self.consumers.get(s)
            if readers is None:
                continue
            readers.discard(consumer)
            if not readers:
                del self.consumers[s]
                self.idle_since[s] = now

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self.consumers),
            "upstream_streams": len(self.upstream),
            "lingering": len(self.idle_since),
            "consumers": sum(len(c) for c in self.consumers.values()),
            "frames": self.frames,
            "delivered": self.delivered,
            "unclaimed": self.unclaimed,
            "upstream_errors": self.upstream_errors,
            "subscribes": self.subscribes,
            "unsubscribes": self.unsubscribes,
            "connections": self._stream.stats() if self._stream is not None else [],
        }

    async def aclose(self) -> None:
        """Stop the upstream side (its connections close)."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stream = None
        self.upstream.clear()
        self.idle_since.clear()

    # -- upstream -----------------------------------------------------------------------

    def _upstream(self) -> BinanceStream:
        if self._stream is None:
            queue: asyncio.Queue[str | bytes] = asyncio.Queue()
            kw: dict[str, Any] = {}
            if self.attempts is not None:
                kw["attempts"] = self.attempts
            self._stream = BinanceStream(
                self.ws_url,
                [],
                queue,
                max_streams=self.max_streams_per_connection,
                silence_s=self.silence_s,
                **kw,
            )
            self._tasks = [
                asyncio.create_task(self._keep(self._stream), name="stream-proxy-upstream"),
                asyncio.create_task(self._pump(queue), name="stream-proxy-pump"),
                asyncio.create_task(self._reap(), name="stream-proxy-linger"),
            ]
        return self._stream

    async def _keep(self, stream: BinanceStream) -> None:
        while True:
            try:
                await stream.run()
            except Exception:  # one connection failed unexpectedly: run them again
                log.exception("stream proxy: upstream streams failed; restarting")
                await asyncio.sleep(1.0)

    async def _reap(self) -> None:
        """Unsubscribe upstream the streams idle for ``linger_s``."""
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.linger_s / 2)))
            now = self._clock_s()
            done = [s for s, t in self.idle_since.items() if now - t >= self.linger_s]
            if not done:
                continue
            for s in done:
                del self.idle_since[s]
                self.upstream.discard(s)
            self.unsubscribes += len(done)
            if self._stream is not None:
                self._stream.unsubscribe(done)

    async def _pump(self, queue: asyncio.Queue[str | bytes]) -> None:
        while True:
            self._fan_out(await queue.get())
            while not queue.empty():  # a burst: no task switch per frame
                self._fan_out(queue.get_nowait())

    def _fan_out(self, message: str | bytes) -> None:
        frame = message.decode() if isinstance(message, bytes) else message
        split = split_combined(frame)
        if split is None:  # an answer to our SUBSCRIBE / UNSUBSCRIBE
            if '"error"' in frame or '"code"' in frame:
                self.upstream_errors += 1
                log.warning("stream proxy: the upstream answered %.200s", frame)
            return
        stream, payload = split
        self.frames += 1
        readers = self.consumers.get(stream)
        if not readers:
            self.unclaimed += 1
            return
        for reader in list(readers):
            with contextlib.suppress(Exception):  # one consumer never stops the others
                reader.deliver(frame if reader.combined else payload)
                self.delivered += 1
