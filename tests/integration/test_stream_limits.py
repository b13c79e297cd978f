"""BinanceStream within Binance's websocket limits, measured at a real websocket server
(a small ``websockets`` server that counts what each connection receives, pongs
included, and answers SUBSCRIBE / UNSUBSCRIBE as Binance does)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from livecandle.exchange.binance.stream import BinanceStream
from livecandle.exchange.binance.stream_limits import MemoryConnectionAttempts


@dataclass(eq=False)
class Seen:
    """What one connection sent: (monotonic time, kind, size) per message, its streams."""

    path: str
    opened_s: float
    received: list[tuple[float, str, int]] = field(default_factory=list)
    streams: set[str] = field(default_factory=set)
    closed: bool = False


class CountingConnection(ServerConnection):
    """Records each pong as it arrives."""

    seen: Seen | None = None

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PONG and self.seen is not None:
            self.seen.received.append((time.monotonic(), "pong", len(event.data)))
        super().process_event(event)


class Venue:
    """The server: every connection's record, and a switch to cut them all."""

    def __init__(self) -> None:
        self.conns: list[Seen] = []
        self.sockets: set[ServerConnection] = set()
        self.changed = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None and isinstance(ws, CountingConnection)
        query = parse_qs(urlsplit(ws.request.path).query)
        seen = Seen(ws.request.path, time.monotonic())
        seen.streams.update(s for s in query.get("streams", [""])[0].split("/") if s)
        ws.seen = seen
        self.conns.append(seen)
        self.sockets.add(ws)
        self.changed.set()
        beat = asyncio.create_task(self._beat(ws))
        try:
            async for text in ws:
                seen.received.append((time.monotonic(), "text", len(text)))
                req = msgspec.json.decode(text)
                if req["method"] == "SUBSCRIBE":
                    seen.streams.update(req["params"])
                elif req["method"] == "UNSUBSCRIBE":
                    seen.streams.difference_update(req["params"])
                await ws.send(msgspec.json.encode({"result": None, "id": req["id"]}).decode())
                self.changed.set()
        except Exception:
            pass
        finally:
            beat.cancel()
            seen.closed = True
            self.sockets.discard(ws)
            self.changed.set()

    @staticmethod
    async def _beat(ws: ServerConnection) -> None:
        """Data now and then, so that the client's silence watchdog stays calm."""
        with contextlib.suppress(Exception):
            while True:
                await ws.send('{"stream":"x@aggTrade","data":{}}')
                await asyncio.sleep(0.2)

    def open(self) -> list[Seen]:
        return [c for c in self.conns if not c.closed]

    async def until(self, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    async def cut(self) -> None:
        await asyncio.gather(*(ws.close() for ws in list(self.sockets)))


@contextlib.asynccontextmanager
async def venue(
    ping_interval_s: float = 0.5, ping_timeout_s: float = 30
) -> AsyncIterator[tuple[Venue, str]]:
    v = Venue()
    async with serve(
        v.handler,
        "127.0.0.1",
        0,
        ping_interval=ping_interval_s,
        ping_timeout=ping_timeout_s,
        create_connection=CountingConnection,
        max_size=2**20,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield v, f"ws://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def running(stream: BinanceStream) -> AsyncIterator[BinanceStream]:
    task = asyncio.create_task(stream.run())
    try:
        yield stream
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def most_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    return max((sum(t <= x < t + window_s for x in times) for t in times), default=0)


INTERVALS = ("1m", "3m", "5m", "15m", "1h", "4h")


async def test_the_whole_market_subscribes_in_small_messages_at_most_5_a_second() -> None:
    names = [f"1000sats{i:04d}fdusd" for i in range(1600)]
    streams = [s for n in names for s in [f"{n}@aggTrade", *(f"{n}@kline_{i}" for i in INTERVALS)]]
    async with venue(ping_interval_s=0.5) as (v, url):
        stream = BinanceStream(url, streams, asyncio.Queue(), silence_s=60)
        async with running(stream):
            await v.until(
                lambda: sum(len(c.streams) for c in v.open()) == len(streams), timeout_s=60
            )
            await asyncio.sleep(1.0)  # pongs keep coming: they count too
        conns = list(v.conns)
    assert len(conns) == 11  # 1024 streams each at most
    assert sorted(s for c in conns for s in c.streams) == sorted(streams)
    for c in conns:
        assert len(c.path) <= 2_000
        texts = [size for _, kind, size in c.received if kind == "text"]
        assert texts and max(texts) <= 3_500  # each SUBSCRIBE under 4 KB
        assert any(kind == "pong" for _, kind, _ in c.received)
        # Binance's limit, pongs included, measured where it is enforced
        assert most_in_window([t for t, _, _ in c.received], 1.0) <= 5


async def test_a_cut_of_12_connections_reconnects_within_the_attempt_budget() -> None:
    attempts = MemoryConnectionAttempts(limit=6, window_s=2.0, safety=1.0)
    streams = [f"s{i}usdt@aggTrade" for i in range(12)]
    async with venue(ping_interval_s=5) as (v, url):
        stream = BinanceStream(
            url, streams, asyncio.Queue(), max_streams=1, silence_s=60, attempts=attempts
        )
        async with running(stream):
            await v.until(lambda: len(v.open()) == 12)
            # their 24 h replacements are planned hours apart, not together
            ages_h = sorted(g.rotate_age_s / 3600 for g in stream.groups)
            assert ages_h[0] > 20.4 and ages_h[-1] <= 23.5 and ages_h[-1] - ages_h[0] > 2.0
            assert min(b - a for a, b in itertools.pairwise(ages_h)) > 0.05
            cut_s = time.monotonic()
            await v.cut()
            await v.until(lambda: len([c for c in v.open() if c.opened_s > cut_s]) == 12)
            stats = stream.attempt_stats()
        opened = sorted(c.opened_s for c in v.conns)
    assert len(opened) == 24
    # never more than the budget in any window (less a little for the network's delay)
    assert most_in_window(opened, 1.9) <= 6
    assert stats["attempts"] == 24 and stats["waits"] >= 6
    reconnects = sorted(t for t in opened if t > cut_s)
    assert reconnects[-1] - reconnects[0] >= 1.9  # spread: the budget made half wait


async def test_unsubscribe_closes_an_emptied_connection_and_subscribe_after_it_works() -> None:
    async with venue(ping_interval_s=5) as (v, url):
        a = [f"a{i}usdt@aggTrade" for i in range(3)]
        b = [f"b{i}usdt@aggTrade" for i in range(3)]
        stream = BinanceStream(url, a + b, asyncio.Queue(), max_streams=3, silence_s=60)
        async with running(stream):
            await v.until(lambda: len(v.open()) == 2)
            stream.unsubscribe([a[0], b[0], b[1], b[2]])
            # the first connection keeps two streams; the second, emptied, closes
            await v.until(lambda: len(v.open()) == 1)
            assert v.open()[0].streams == {a[1], a[2]}
            assert [g.name for g in stream.groups] == ["conn0"]
            unsubscribes = [k for _, k, _ in v.open()[0].received if k == "text"]
            assert len(unsubscribes) == 1
            stream.subscribe([a[0], b[0]])  # back: one into the room left, one anew
            await v.until(lambda: {s for c in v.open() for s in c.streams} == {*a, b[0]})
            assert len(v.open()) == 2
            assert [g.stats.streams for g in stream.groups] == [3, 1]
            stream.unsubscribe([b[0]])
            stream.subscribe([b[0]])  # changed back before anything was sent
            await asyncio.sleep(0.3)
            assert {s for c in v.open() for s in c.streams} == {*a, b[0]}
            stream.unsubscribe([*a, b[0]])  # everything: every connection closes
            await v.until(lambda: not v.open())
            assert stream.groups == []
            stream.subscribe([b[2]])  # and the stream still runs: a new one opens
            await v.until(lambda: [c.streams for c in v.open()] == [{b[2]}])


async def test_a_stalled_symbol_reconnects_only_the_connection_carrying_it() -> None:
    # every symbol of a dropped connection needs its missed trades fetched over REST:
    # a stall of one must not cost the whole market a gap fill
    streams = [f"s{i}usdt@{kind}" for i in range(3) for kind in ("aggTrade", "kline_1m")]
    async with venue(ping_interval_s=5) as (v, url):
        stream = BinanceStream(url, streams, asyncio.Queue(), max_streams=2, silence_s=60)
        async with running(stream):
            await v.until(lambda: len(v.open()) == 3)
            # the client's side of each is open too (it has no event per connection)
            async with asyncio.timeout(30):
                while not all(g.ws is not None for g in stream.groups):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            before = {frozenset(c.streams): c for c in v.open()}
            await stream.drop("S1USDT")
            await v.until(lambda: len(v.conns) == 4 and len(v.open()) == 3)
            after = {frozenset(c.streams): c for c in v.open()}
    s1 = frozenset({"s1usdt@aggTrade", "s1usdt@kline_1m"})
    assert after[s1] is not before[s1]  # its connection was replaced
    assert all(after[k] is before[k] for k in before if k != s1)  # the others kept


async def test_pings_are_answered_while_the_subscribes_are_paced() -> None:
    # 1,000 streams on one connection: ~70 in the URL, the rest in 8 paced SUBSCRIBEs
    # (seconds); a server that wants each pong within 0.4 s keeps the connection
    streams = [f"1000sats{i:04d}fdusd@aggTrade" for i in range(1000)]
    async with venue(ping_interval_s=0.5, ping_timeout_s=0.4) as (v, url):
        stream = BinanceStream(url, streams, asyncio.Queue(), silence_s=60)
        async with running(stream):
            await v.until(lambda: sum(len(c.streams) for c in v.open()) == len(streams))
            ws = stream.groups[0].ws
            assert ws is not None
            pongs = ws.pongs
        conns = list(v.conns)
    assert len(conns) == 1  # never cut for a missing pong
    c = conns[0]
    texts = [t for t, kind, _ in c.received if kind == "text"]
    assert len(texts) >= 6 and texts[-1] - texts[0] > 1.0  # paced over seconds
    server_pongs = [t for t, kind, _ in c.received if kind == "pong"]
    assert abs(len(server_pongs) - pongs) <= 1 and pongs >= 3
    assert any(texts[0] < t < texts[-1] for t in server_pongs)  # answered meanwhile
    assert most_in_window([t for t, _, _ in c.received], 1.0) <= 5


@contextlib.asynccontextmanager
async def scripted(
    first: Callable[[ServerConnection], Any],
) -> AsyncIterator[tuple[list[ServerConnection], str]]:
    """A server whose first connection runs ``first``; later ones send a message a
    tenth of a second."""
    conns: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        conns.append(ws)
        with contextlib.suppress(Exception):
            if len(conns) == 1:
                await first(ws)
                return
            while True:
                await ws.send('{"stream":"x@aggTrade","data":{"a":2}}')
                await asyncio.sleep(0.1)

    async with serve(handler, "127.0.0.1", 0, ping_interval=None, max_size=2**20) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield conns, f"ws://127.0.0.1:{port}"


async def test_a_message_up_to_4_mib_is_delivered_and_a_larger_one_drops_the_connection() -> None:
    big = '"' + "x" * (2**22 - 2) + '"'  # 4 MiB exactly

    async def first(ws: ServerConnection) -> None:
        await ws.send(big)
        await ws.send(big + " ")
        await ws.wait_closed()

    queue: asyncio.Queue[str | bytes] = asyncio.Queue()
    async with scripted(first) as (conns, url):
        stream = BinanceStream(url, ["x@aggTrade"], queue, silence_s=60, backoff_base_s=0.01)
        async with running(stream):
            async with asyncio.timeout(15):
                got = [await queue.get() for _ in range(2)]
    assert got[0] == big and isinstance(got[0], str)  # text frames arrive as str
    assert got[1] == '{"stream":"x@aggTrade","data":{"a":2}}'  # from the reconnection
    assert len(conns) == 2 and conns[0].close_code == 1009  # "message too big"
    assert stream.reconnects == 1


async def test_a_close_with_an_error_code_is_reported_and_reconnected() -> None:
    async def first(ws: ServerConnection) -> None:
        await ws.send('{"stream":"x@aggTrade","data":{"a":1}}')
        await ws.close(1011, "internal error")

    queue: asyncio.Queue[str | bytes] = asyncio.Queue()
    async with scripted(first) as (conns, url):
        stream = BinanceStream(url, ["x@aggTrade"], queue, silence_s=60, backoff_base_s=0.01)
        async with running(stream):
            async with asyncio.timeout(15):
                got = [await queue.get() for _ in range(2)]
                errors = []
                while not errors:
                    errors = [g.stats.last_error for g in stream.groups if g.stats.last_error]
                    await asyncio.sleep(0.01)
    assert got == [
        '{"stream":"x@aggTrade","data":{"a":1}}',
        '{"stream":"x@aggTrade","data":{"a":2}}',
    ]
    assert "1011" in errors[0] and errors[0].startswith("closed (")
    assert len(conns) == 2
