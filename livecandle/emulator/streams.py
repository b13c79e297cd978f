"""The emulator's websocket market streams, as Binance serves them.

``/ws/<stream>`` (raw payloads) and ``/stream?streams=a/b`` (``{"stream","data"}``
wrapper); ``<symbol>@aggTrade`` (one event per trade), ``<symbol>@kline_<interval>``
(``kline_feed``: updates when the candle changed, the final at each close),
``<symbol>@miniTicker`` and ``!miniTicker@arr`` (``ticker_feed``, every second) payloads; live
SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY. Binance's
limits (``WsLimits``), each violation counted: at most 1024 streams per connection (an
error answer), 5 incoming messages a second (disconnect), a message over about 4 KB
ignored without an answer, 300 connection attempts per 5 minutes per IP (HTTP 429).
Each payload is encoded once whoever reads it. Server pings come from the HTTP server
(uvicorn's ``ws_ping_interval``). Fault switches: drop every connection, stall a symbol,
skip messages, cut connections before 24 h.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from livecandle.domain.intervals import INTERVALS
from livecandle.emulator.depth_feed import DepthFeed
from livecandle.emulator.faults import Faults
from livecandle.emulator.kline_feed import KlineFeed
from livecandle.emulator.outbox import QUEUE_LIMIT, Outbox
from livecandle.emulator.schedule import Market
from livecandle.emulator.tape import TradeTuple
from livecandle.emulator.ticker_feed import TickerFeed, is_ticker_stream
from livecandle.emulator.wire import units
from livecandle.exchange.binance.stream_protocol import valid_stream as binance_stream

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()


@dataclass
class WsLimits:
    """Binance's websocket limits (its defaults); counters of each violation."""

    max_streams: int = 1024  # per connection
    max_incoming_per_s: int = 5  # per connection; more: disconnected
    max_message_bytes: int = 4096  # a larger incoming message is ignored, unanswered
    max_attempts: int = 300  # connection attempts per IP per window; more: HTTP 429
    attempts_window_s: float = 300.0


class Conn:
    def __init__(self, ws: WebSocket, combined: bool) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: set[str] = set()
        self.opened = time.monotonic()
        self.outbox = Outbox(QUEUE_LIMIT)
        self.incoming: deque[float] = deque()

    @property
    def closing(self) -> bool:
        return self.outbox.closing

    def close(self) -> None:
        """Send what is queued, then close."""
        self.outbox.close()


class Venue(Protocol):
    """What the hub needs from the emulator: its clock, its market, its fault switches."""

    market: Market
    faults: Faults

    def now_ms(self) -> int: ...

    def advance(self) -> tuple[int, dict[str, list[TradeTuple]]]:
        """Run the market up to now: ``(now_ms, new trades per symbol)``."""
        ...


class StreamHub:
    def __init__(
        self, venue: Venue, seed: int, tick_ms: int, limits: WsLimits | None = None
    ) -> None:
        self.venue = venue
        self.tick_ms = tick_ms
        self.limits = limits or WsLimits()
        self.conns: set[Conn] = set()
        self.subs: dict[str, set[Conn]] = {}
        self.klines = KlineFeed(venue.market)
        self.depth = DepthFeed(venue.market)  # order books, made for their first watcher
        self.tickers = TickerFeed(venue.market)
        self.attempts: dict[str, deque[float]] = {}
        self.sent = 0
        self.skipped = 0
        self.dropped_connections = 0
        self.violations = {
            "too_many_streams": 0,
            "rate_disconnects": 0,
            "oversized_ignored": 0,
            "attempts_refused": 0,
        }
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random(seed + 7)
        self._agg_streams: dict[str, str] = {}  # symbol -> its aggTrade stream's name

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="emulator-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in list(self.conns):
            conn.close()

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.conns),
            "writers": dict(Counter(c.outbox.mode for c in self.conns)),
            "streams": len(self.subs),
            "sent": self.sent,
            "skipped": self.skipped,
            "dropped_connections": self.dropped_connections,
            "kline_series": len(self.klines.series),
            "kline_series_cold": self.klines.cold(),
            "depth": self.depth.stats(),
            "limits": dict(vars(self.limits)),
            "violations": dict(self.violations),
        }

    def reset_limits(self) -> None:
        self.attempts.clear()
        for name in self.violations:
            self.violations[name] = 0

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
                conn.outbox.put(wrapped)
            else:
                conn.outbox.put(payload)
            self.sent += 1

    def _send_all(self, stream: str, payloads: list[str]) -> None:
        """``_send`` of each payload, in order (one call per connection, not per message)."""
        conns = self.subs.get(stream)
        if not conns:
            return
        wrapped = None
        for conn in conns:
            if conn.closing:
                continue
            if conn.combined:
                if wrapped is None:
                    head = f'{{"stream":"{stream}","data":'
                    wrapped = [f"{head}{p}}}" for p in payloads]
                conn.outbox.put_all(wrapped)
            else:
                conn.outbox.put_all(payloads)
            self.sent += len(payloads)

    def _silent(self) -> set[str]:
        """Symbols whose streams are stalled now (a fault switch)."""
        stalled = self.venue.faults.stalled
        if not stalled:
            return set()
        loop_now = asyncio.get_running_loop().time()
        for symbol in [s for s, until in stalled.items() if until <= loop_now]:
            del stalled[symbol]
        return set(stalled)

    def publish(self, new: dict[str, list[TradeTuple]]) -> None:
        now = self.venue.now_ms()
        skip = self.venue.faults.skip_rate
        silent = self._silent()
        now_s = time.monotonic()
        subs = self.subs
        names = self._agg_streams
        klines_traded, tickers_traded = self.klines.traded, self.tickers.traded
        for symbol, trades in new.items():
            klines_traded(symbol, now_s)
            tickers_traded(symbol)
            stream = names.get(symbol)
            if stream is None:
                stream = names[symbol] = f"{symbol.lower()}@aggTrade"
            if stream not in subs:
                continue
            if symbol in silent:
                self.skipped += len(trades)
                continue
            if skip:
                for t in trades:
                    if self._rng.random() < skip:
                        self.skipped += 1
                        continue
                    self._send(stream, agg_trade_payload(symbol, t, now))
                continue
            self._send_all(stream, [agg_trade_payload(symbol, t, now) for t in trades])

    async def _run(self) -> None:
        tick_s = self.tick_ms / 1000
        while True:
            await asyncio.sleep(tick_s)
            try:
                now, new = self.venue.advance()
                self.publish(new)
                if new:
                    # the writers send the trades before the rest of the tick (the kline
                    # feed may spend its time budget): then on with the market of now
                    await asyncio.sleep(0)
                    now, new = self.venue.advance()
                    self.publish(new)
                silent = self._silent()
                self.klines.closes(now)
                self.klines.updates(now, time.monotonic(), self._send, silent)
                self.depth.tick(now, self._send, silent)
                self.tickers.tick(now, self._send, silent)
                max_age = self.venue.faults.max_connection_age_s
                mono = time.monotonic()
                for conn in list(self.conns):
                    if mono - conn.opened > max_age and not conn.closing:
                        conn.close()
            except Exception:  # keep the market ticking whatever one send did
                log.exception("emulator ticker")

    async def drop_all(self) -> None:
        for conn in list(self.conns):
            conn.close()
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
            subs = self.subs.get(s)
            if subs is None:
                subs = self.subs[s] = set()
                if "@kline_" in s:
                    self.klines.add(s)
                elif is_ticker_stream(s):
                    self.tickers.add(s)
                else:
                    self.depth.add(s)
            subs.add(conn)

    def _unsubscribe(self, conn: Conn, streams: list[str] | set[str]) -> None:
        for s in list(streams):
            conn.streams.discard(s)
            subs = self.subs.get(s)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.subs[s]
                    self.klines.remove(s)
                    self.depth.remove(s)
                    self.tickers.remove(s)

    def _attempt(self, ws: WebSocket) -> bool:
        """Count a connection attempt; False when the IP made too many lately."""
        ip = ws.client.host if ws.client else "?"
        now = time.monotonic()
        seen = self.attempts.setdefault(ip, deque())
        while seen and now - seen[0] > self.limits.attempts_window_s:
            seen.popleft()
        seen.append(now)
        return len(seen) <= self.limits.max_attempts

    async def _serve(self, ws: WebSocket, streams: list[str], combined: bool) -> None:
        if not self._attempt(ws):
            self.violations["attempts_refused"] += 1
            await ws.send_denial_response(
                Response(
                    b'{"code":-1003,"msg":"Too many connection attempts."}',
                    429,
                    {"Retry-After": str(int(self.limits.attempts_window_s))},
                    media_type="application/json",
                )
            )
            return
        if len(streams) > self.limits.max_streams:
            self.violations["too_many_streams"] += 1
            await ws.close(code=1008)
            return
        if any(not valid_stream(s) for s in streams):
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
                if len(conn.incoming) > self.limits.max_incoming_per_s:
                    self.violations["rate_disconnects"] += 1
                    log.info("closing a connection that sent more than 5 messages/s")
                    break
                if len(text.encode()) > self.limits.max_message_bytes:
                    self.violations["oversized_ignored"] += 1  # Binance does not answer
                    continue
                reply = self._control(conn, text)
                if reply is not None:
                    conn.outbox.put(reply)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conn.close()
            self._unsubscribe(conn, conn.streams)
            self.conns.discard(conn)
            await writer

    async def _writer(self, conn: Conn) -> None:
        ws = conn.ws
        try:
            await conn.outbox.run(ws)
        except Exception:  # the peer went away; the reader side cleans up
            pass
        finally:
            conn.close()
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
                if len(conn.streams | set(params)) > self.limits.max_streams:
                    self.violations["too_many_streams"] += 1
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
    """Binance's stream names (``stream_protocol``). A kind the emulator does not produce
    is accepted and stays silent, as a quiet stream on Binance: a subscription naming it
    does not fail for the other names. Klines in UTC only."""
    if "@kline_" in name:
        return name.partition("@kline_")[2] in INTERVALS and binance_stream(name)
    return binance_stream(name)


def agg_trade_payload(symbol: str, t: TradeTuple, now_ms: int) -> str:
    m = "true" if t[6] else "false"
    return (
        f'{{"e":"aggTrade","E":{now_ms},"s":"{symbol}","a":{t[0]},"p":"{units(t[1])}",'
        f'"q":"{units(t[2])}","f":{t[3]},"l":{t[4]},"T":{t[5]},"m":{m},"M":true}}'
    )
