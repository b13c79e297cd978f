"""LiveFeed on hand-made frames: ordering, bad input, seeding. No network needed: the REST
client is never called in these cases."""

from __future__ import annotations

import asyncio

import msgspec

from livecandle.domain.clock import ManualClock
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import Trade
from livecandle.domain.sequencer import Offer, TradeSequencer
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.live.feed import LiveFeed

T0 = 1_700_000_100_000


def agg(a: int, price: str = "100.00000000", t: int = T0, f: int | None = None, n: int = 1) -> str:
    f = a * 10 if f is None else f
    return msgspec.json.encode(
        {
            "stream": "btcusdt@aggTrade",
            "data": {
                "e": "aggTrade",
                "E": t,
                "s": "BTCUSDT",
                "a": a,
                "p": price,
                "q": "1.00000000",
                "f": f,
                "l": f + n - 1,
                "T": t,
                "m": False,
                "M": True,
            },
        }
    ).decode()


def feed() -> LiveFeed:
    return LiveFeed(
        ["BTCUSDT"], [INTERVALS["1m"]], BinanceRest("http://127.0.0.1:9"), ManualClock(T0)
    )


def test_malformed_frames_are_counted_and_change_nothing() -> None:
    f = feed()
    f.handle(agg(1))
    for bad in [
        "{",
        "[]",
        '{"stream":"x","data":{"e":"aggTrade","s":"BTCUSDT"}}',
        agg(2, price="abc"),
        b"\xff\xfe",
        agg(3, price="1.123456789"),
    ]:
        f.handle(bad)
    st = f.states["BTCUSDT"]
    assert f.bad_messages == 6
    assert st.sequencer.last_id == 1
    forming = st.builder.forming(0)
    assert forming is not None and forming.trades == 1


def test_unknown_event_types_and_replies_are_ignored_quietly() -> None:
    f = feed()
    f.handle('{"result":null,"id":1}')
    f.handle('{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}')
    f.handle('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}')
    assert f.bad_messages == 0 and f.unknown_events == 1


def test_duplicates_are_dropped_by_id() -> None:
    f = feed()
    for a in (1, 2, 2, 3, 1):
        f.handle(agg(a))
    st = f.states["BTCUSDT"]
    forming = st.builder.forming(0)
    assert forming is not None and forming.trades == 3
    assert st.sequencer.duplicates == 2


def test_sequencer_holds_trades_after_a_gap_until_it_is_filled() -> None:
    s = TradeSequencer()

    def t(a: int) -> Trade:
        return Trade(a, 1, 1, a, a, T0 + a, False)

    assert s.offer(t(1)) is Offer.NEXT
    assert s.offer(t(4)) is Offer.GAP
    assert s.offer(t(5)) is Offer.HELD
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (2, 3)
    out = s.resolve([t(2)])  # a short fetch: 3 still missing
    assert [x.agg_id for x in out] == [2]
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (3, 3)
    out = s.resolve([t(3), t(4)])
    assert [x.agg_id for x in out] == [3, 4, 5]
    assert s.gap is None and s.recovered == 2


def kline(
    open_ms: int,
    event_ms: int,
    first: int,
    last: int,
    ohlc: tuple[str, str, str, str] = ("100.00000000",) * 4,
    volumes: tuple[str, str, str, str] = ("0.00000000",) * 4,
    trades: int = 0,
) -> str:
    """A kline_1m frame; ``volumes`` = (v, q, V, Q)."""
    o, h, low, c = ohlc
    v, q, vb, qb = volumes
    return msgspec.json.encode(
        {
            "stream": "btcusdt@kline_1m",
            "data": {
                "e": "kline",
                "E": event_ms,
                "s": "BTCUSDT",
                "k": {
                    "t": open_ms,
                    "T": open_ms + 59_999,
                    "s": "BTCUSDT",
                    "i": "1m",
                    "f": first,
                    "L": last,
                    "o": o,
                    "c": c,
                    "h": h,
                    "l": low,
                    "v": v,
                    "n": trades,
                    "x": False,
                    "q": q,
                    "V": vb,
                    "Q": qb,
                    "B": "0",
                },
            },
        }
    ).decode()


def test_seed_from_a_snapshot_on_an_agg_trade_boundary() -> None:
    f = feed()
    open_ms = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, "100.00000000", T0 + 1000, f=10))
    f.handle(agg(2, "101.00000000", T0 + 2000, f=11))
    f.handle(agg(3, "102.00000000", T0 + 3000, f=12))
    st = f.states["BTCUSDT"]
    assert not st.builder.is_complete(0)
    # the exchange saw 5 earlier trades too; its snapshot ends at trade id 11 (aggTrade 2)
    f.handle(
        kline(
            open_ms,
            T0 + 2500,
            first=3,
            last=11,
            ohlc=("99.00000000", "101.00000000", "98.00000000", "101.00000000"),
            volumes=("7.00000000", "700.00000000", "3.00000000", "300.00000000"),
            trades=9,
        )
    )
    assert st.builder.is_complete(0)
    c = st.builder.forming(0)
    assert c is not None
    assert (c.open, c.close, c.low, c.trades) == (99 * 10**8, 102 * 10**8, 98 * 10**8, 10)


def test_a_kline_without_trades_does_not_let_the_clock_close_over_missed_trades() -> None:
    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], BinanceRest("http://127.0.0.1:9"), clock)
    open0 = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=open0 + 30_000))
    # a reconnect later; trades of minutes 1 and 2 never arrived; minute 3 has none yet
    f.handle(kline(open0 + 3 * 60_000, open0 + 3 * 60_000 + 10_000, first=-1, last=-1))
    clock.set(open0 + 3 * 60_000 + 15_000)
    f.tick()
    st = f.states["BTCUSDT"]
    assert st.closed == []  # nothing closed as "empty and complete" over the unknown minutes
    forming = st.builder.forming(0)
    assert forming is not None and forming.open_ms == open0


class TinyExchange:
    """A real HTTP server on loopback that answers every request with one fixed reply:
    the exchange misbehaving (a 200 with HTML) or a quiet market (``[]``)."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        self.body, self.content_type = body, content_type
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            self.paths.append(head.split(b" ", 2)[1].decode())
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + self.content_type.encode() + b"\r\n"
                b"Content-Length: " + str(len(self.body)).encode() + b"\r\n\r\n" + self.body
            )
            await writer.drain()


async def test_a_fill_that_keeps_failing_is_abandoned_and_the_symbol_goes_on() -> None:
    async with TinyExchange(b"<html>maintenance</html>", "text/html") as url:
        clock = ManualClock(T0)
        rest = BinanceRest(url)
        f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], rest, clock, fill_give_up_s=0.3)
        open0 = INTERVALS["1m"].open_of(T0)
        f.handle(agg(1, t=open0 + 1_000))
        f.handle(agg(5, t=open0 + 61_000))  # 2..4 missed: a fill starts, and fails
        f.handle(agg(6, t=open0 + 62_000))
        st = f.states["BTCUSDT"]
        assert st.sequencer.gap is not None
        await asyncio.wait_for(asyncio.gather(*f._fills), 30)
        assert st.sequencer.gap is None and st.sequencer.abandoned == 1
        assert st.sequencer.last_id == 6  # the held trades went through
        # minute 0 lost trades: it closed incomplete; minute 1 may lack some before 1:01
        assert [(c.candle.open_ms - open0, c.complete) for c in st.closed] == [(0, False)]
        assert not st.builder.is_complete(0)
        f.handle(agg(7, t=open0 + 63_000))  # and the symbol goes on
        assert st.sequencer.last_id == 7
        await rest.aclose()


async def test_a_quiet_symbol_does_not_reconnect_but_lost_trades_do() -> None:
    stalls: list[int] = []

    async def on_stall() -> None:
        stalls.append(1)

    for body, expected in ((b"[]", 0), (None, 1)):
        trade = {"a": 2, "p": "1.0", "q": "1.0", "f": 20, "l": 20, "T": T0, "m": False}
        async with TinyExchange(body or msgspec.json.encode([trade])) as url:
            stalls.clear()
            rest = BinanceRest(url)
            f = LiveFeed(
                ["BTCUSDT"],
                [INTERVALS["1m"]],
                rest,
                ManualClock(T0),
                silence_s=5,
                on_stall=on_stall,
            )
            f.handle(agg(1))
            st = f.states["BTCUSDT"]
            st.heard -= 6  # silent for longer than silence_s
            f.tick()
            await asyncio.wait_for(asyncio.gather(*f._fills), 30)
            await asyncio.wait_for(asyncio.gather(*f._fills), 30)  # the reconnect, if any
            assert len(stalls) == expected, body
            assert st.sequencer.last_id == (1 if expected == 0 else 2)
            f.tick()  # heard again just now: no second check
            assert not f._fills
            await rest.aclose()
