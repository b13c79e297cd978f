"""The emulator's websocket market streams, as Binance serves them.

``/ws/<stream>`` (raw payloads) and ``/stream?streams=a/b`` (``{"stream","data"}``
wrapper); ``<symbol>@aggTrade`` and ``<symbol>@kline_<interval>`` payloads; live
SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY; at most
5 incoming messages per second and 1024 streams per connection. Server pings come from
the HTTP server (uvicorn's ``ws_ping_interval``). Fault switches: drop every
connection, stall a symbol, skip messages, cut connections before 24 h.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Any, Protocol

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.domain.model import format_quote, format_units
from livecandle.emulator.faults import Faults
from livecandle.emulator.market import Market, SymbolMarket
from livecandle.emulator.tape import TradeTuple

log = logging.getLogger(__name__)

MAX_STREAMS = 1024
MAX_INCOMING_PER_S = 5
QUEUE_LIMIT = 200_000
_json = msgspec.json.Encoder()


class Conn:
    def __init__(self, ws: WebSocket, combined: bool) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: set[str] = set()
        self.opened = time.monotonic()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.incoming: deque[float] = deque()
        self.sent = 0
        self.closing = False


class Venue(Protocol):
    """What the hub needs from the emulator: its clock, its market, its fault switches."""

    market: Market
    faults: Faults

    def now_ms(self) -> int: ...

    def advance(self) -> tuple[int, dict[str, list[TradeTuple]]]:
        """Run the market up to now: ``(now_ms, new trades per symbol)``."""
        ...


class StreamHub:
    def __init__(self, venue: Venue, seed: int, tick_ms: int) -> None:
        self.venue = venue
        self.tick_ms = tick_ms
        self.conns: set[Conn] = set()
        self.subs: dict[str, set[Conn]] = {}
        self.kline_state: dict[str, tuple[int, float]] = {}
        self.sent = 0
        self.skipped = 0
        self.dropped_connections = 0
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random(seed + 7)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="emulator-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in list(self.conns):
            conn.queue.put_nowait(None)

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.conns),
            "sent": self.sent,
            "skipped": self.skipped,
            "dropped_connections": self.dropped_connections,
        }

    # -- fan-out ------------------------------------------------------------------------

    def _send(self, stream: str, payload: str) -> None:
        conns = self.subs.get(stream)
        if not conns:
            return
        wrapped = None
        for conn in conns:
            if conn.closing:
                continue
            if conn.combined:
                if wrapped is None:
                    wrapped = f'{{"stream":"{stream}","data":{payload}}}'
                conn.queue.put_nowait(wrapped)
            else:
                conn.queue.put_nowait(payload)
            if conn.queue.qsize() > QUEUE_LIMIT:
                conn.closing = True
                conn.queue.put_nowait(None)
            self.sent += 1

    def publish(self, new: dict[str, list[TradeTuple]]) -> None:
        now = self.venue.now_ms()
        faults = self.venue.faults
        loop_now = asyncio.get_running_loop().time()
        for symbol, trades in new.items():
            if not trades:
                continue
            stream = f"{symbol.lower()}@aggTrade"
            if stream not in self.subs:
                continue
            stalled_until = faults.stalled.get(symbol)
            if stalled_until is not None:
                if loop_now < stalled_until:
                    self.skipped += len(trades)
                    continue
                del faults.stalled[symbol]
            skip = faults.skip_rate
            for t in trades:
                if skip and self._rng.random() < skip:
                    self.skipped += 1
                    continue
                self._send(stream, agg_trade_payload(symbol, t, now))

    def _klines(self) -> None:
        now = self.venue.now_ms()
        mono = time.monotonic()
        loop_now = asyncio.get_running_loop().time()
        for stream, conns in self.subs.items():
            if not conns or "@kline_" not in stream:
                continue
            sym_l, _, iname = stream.partition("@kline_")
            symbol = sym_l.upper()
            sm = self.venue.market.symbols.get(symbol)
            interval = INTERVALS.get(iname)
            if sm is None or interval is None:
                continue
            stalled_until = self.venue.faults.stalled.get(symbol)
            if stalled_until is not None and loop_now < stalled_until:
                continue
            open_ms = interval.open_of(now)
            period = 1.0 if interval.name == "1s" else 2.0
            state = self.kline_state.get(stream)
            if state is not None and state[0] != open_ms:
                # the tracked candle closed: its final update, x = true
                self._send(stream, kline_payload(sm, interval, state[0], now, final=True))
                state = None
            if state is None or mono - state[1] >= period:
                self._send(stream, kline_payload(sm, interval, open_ms, now, final=False))
                # a random phase after a (re)start spreads the streams' updates over the
                # period instead of computing them all in one tick
                phase = self._rng.uniform(0, period) if state is None else 0.0
                self.kline_state[stream] = (open_ms, mono - phase)

    async def _run(self) -> None:
        tick_s = self.tick_ms / 1000
        while True:
            await asyncio.sleep(tick_s)
            try:
                _, new = self.venue.advance()
                self.publish(new)
                self._klines()
                max_age = self.venue.faults.max_connection_age_s
                mono = time.monotonic()
                for conn in list(self.conns):
                    if mono - conn.opened > max_age and not conn.closing:
                        conn.closing = True
                        conn.queue.put_nowait(None)
            except Exception:  # keep the market ticking whatever one send did
                log.exception("emulator ticker")

    async def drop_all(self) -> None:
        for conn in list(self.conns):
            conn.closing = True
            conn.queue.put_nowait(None)
            self.dropped_connections += 1

    # -- connections --------------------------------------------------------------------

    async def raw_endpoint(self, ws: WebSocket) -> None:
        path = ws.path_params.get("streams", "")
        await self._serve(ws, [s for s in path.split("/") if s], combined=False)

    async def combined_endpoint(self, ws: WebSocket) -> None:
        names = ws.query_params.get("streams", "")
        await self._serve(ws, [s for s in names.split("/") if s], combined=True)

    def _subscribe(self, conn: Conn, streams: list[str]) -> None:
        for s in streams:
            conn.streams.add(s)
            self.subs.setdefault(s, set()).add(conn)

    def _unsubscribe(self, conn: Conn, streams: list[str] | set[str]) -> None:
        for s in list(streams):
            conn.streams.discard(s)
            subs = self.subs.get(s)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.subs[s]
                    self.kline_state.pop(s, None)

    async def _serve(self, ws: WebSocket, streams: list[str], combined: bool) -> None:
        if len(streams) > MAX_STREAMS or any(not valid_stream(s) for s in streams):
            await ws.close(code=1008)
            return
        await ws.accept()
        conn = Conn(ws, combined)
        self.conns.add(conn)
        self._subscribe(conn, streams)
        writer = asyncio.create_task(self._writer(conn))
        try:
            while not conn.closing:
                text = await ws.receive_text()
                now = time.monotonic()
                conn.incoming.append(now)
                while conn.incoming and now - conn.incoming[0] > 1.0:
                    conn.incoming.popleft()
                if len(conn.incoming) > MAX_INCOMING_PER_S:
                    log.info("closing a connection that sent more than 5 messages/s")
                    break
                reply = self._control(conn, text)
                if reply is not None:
                    conn.queue.put_nowait(reply)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conn.closing = True
            self._unsubscribe(conn, conn.streams)
            self.conns.discard(conn)
            conn.queue.put_nowait(None)
            await writer

    async def _writer(self, conn: Conn) -> None:
        ws = conn.ws
        send = ws._send  # the raw ASGI send: Starlette's wrapper costs per message
        queue = conn.queue
        try:
            while True:
                msg = await queue.get()
                if msg is None:
                    break
                await send({"type": "websocket.send", "text": msg})
                conn.sent += 1
        except Exception:  # the peer went away; the reader side cleans up
            pass
        finally:
            conn.closing = True
            if ws.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(code=1000)

    def _control(self, conn: Conn, text: str) -> str | None:
        try:
            req = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return _json.encode(
                {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}
            ).decode()
        if not isinstance(req, dict) or "method" not in req:
            return _json.encode(
                {"code": 2, "msg": "Invalid request: missing field `method`"}
            ).decode()
        rid = req.get("id")
        if rid is not None and not isinstance(rid, int | str):
            return _json.encode({"code": 2, "msg": "Invalid request: invalid id"}).decode()
        method, params = req["method"], req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(
                isinstance(p, str) and valid_stream(p) for p in params
            ):
                return _json.encode(
                    {"code": 2, "msg": "Invalid request: invalid stream name", "id": rid}
                ).decode()
            if method == "SUBSCRIBE":
                if len(conn.streams | set(params)) > MAX_STREAMS:
                    return _json.encode(
                        {"code": 2, "msg": "Invalid request: too many streams", "id": rid}
                    ).decode()
                self._subscribe(conn, params)
            else:
                self._unsubscribe(conn, params)
            return _json.encode({"result": None, "id": rid}).decode()
        if method == "LIST_SUBSCRIPTIONS":
            return _json.encode({"result": sorted(conn.streams), "id": rid}).decode()
        if method == "SET_PROPERTY":
            if params and params[0] == "combined":
                if len(params) < 2 or not isinstance(params[1], bool):
                    return _json.encode(
                        {"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid}
                    ).decode()
                conn.combined = params[1]
                return _json.encode({"result": None, "id": rid}).decode()
            return _json.encode({"code": 0, "msg": "Unknown property", "id": rid}).decode()
        if method == "GET_PROPERTY":
            if params and params[0] == "combined":
                return _json.encode({"result": conn.combined, "id": rid}).decode()
            return _json.encode({"code": 0, "msg": "Unknown property", "id": rid}).decode()
        return _json.encode(
            {"code": 2, "msg": f"Invalid request: unknown method {method}", "id": rid}
        ).decode()


def valid_stream(name: str) -> bool:
    symbol, at, kind = name.partition("@")
    if not at or not symbol or symbol != symbol.lower():
        return False
    if kind == "aggTrade":
        return True
    return kind.startswith("kline_") and kind[6:] in INTERVALS


def agg_trade_payload(symbol: str, t: TradeTuple, now_ms: int) -> str:
    m = "true" if t[6] else "false"
    return (
        f'{{"e":"aggTrade","E":{now_ms},"s":"{symbol}","a":{t[0]},"p":"{format_units(t[1])}",'
        f'"q":"{format_units(t[2])}","f":{t[3]},"l":{t[4]},"T":{t[5]},"m":{m},"M":true}}'
    )


def kline_payload(
    sm: SymbolMarket, interval: Interval, open_ms: int, now_ms: int, final: bool
) -> str:
    nxt = interval.next_open(open_ms)
    agg = sm.range_agg(open_ms, nxt)
    if agg is None:
        price = sm.last_price_before(open_ms) or 0
        agg = [price, price, price, price, 0, 0, 0, 0, 0, -1, -1]
    k = {
        "t": open_ms,
        "T": nxt - 1,
        "s": sm.symbol,
        "i": interval.name,
        "f": agg[9],
        "L": agg[10],
        "o": format_units(agg[0]),
        "c": format_units(agg[3]),
        "h": format_units(agg[1]),
        "l": format_units(agg[2]),
        "v": format_units(agg[4]),
        "n": agg[6],
        "x": final,
        "q": format_quote(agg[5]),
        "V": format_units(agg[7]),
        "Q": format_quote(agg[8]),
        "B": "0",
    }
    return _json.encode({"e": "kline", "E": now_ms, "s": sm.symbol, "k": k}).decode()
