"""Binance as the live feed's source: stream names, frames into market events, and the
trade history over REST.

The live side knows only ``domain.events``; everything Binance-shaped (combined-stream
framing, one-letter fields, decimal strings, ``fromId`` paging) ends here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import msgspec

from livecandle.domain.events import (
    BadMessage,
    CandleSnapshot,
    MarketEvent,
    ServerShutdown,
    TradeEvent,
    UnknownMessage,
)
from livecandle.domain.intervals import Interval
from livecandle.domain.model import Candle, Trade, to_units
from livecandle.exchange.binance import parse
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.exchange.binance.weights import Priority

log = logging.getLogger(__name__)

Frame = str | bytes  # one websocket message, as the stream client queues it


class _Combined(msgspec.Struct):
    """``{"stream": "btcusdt@aggTrade", "data": {...}}`` (combined streams), read as far as
    needed first: the stream's name is skipped (the event names its symbol), a kline's
    figures too (``_snapshot``)."""

    data: parse.StreamHead


class _CombinedKline(msgspec.Struct):
    """A kline message read whole: its figures too."""

    data: parse.KlineEvent


_combined = msgspec.json.Decoder(_Combined)
_combined_kline = msgspec.json.Decoder(_CombinedKline)
_UNKNOWN = UnknownMessage()


def streams_for(symbols: Sequence[str], intervals: Sequence[Interval]) -> list[str]:
    """aggTrades for the candles, kline streams to seed and confirm them."""
    out = []
    for s in symbols:
        low = s.lower()
        out.append(f"{low}@aggTrade")
        out.extend(f"{low}@kline_{i.name}" for i in intervals)
    return out


def decode_frame(frame: Frame) -> MarketEvent | None:
    """One combined-stream message as its market event (an ``EventDecoder``); None for
    a reply to SUBSCRIBE. Never raises: what cannot be read becomes a ``BadMessage``."""
    try:
        data = _combined.decode(frame).data
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return _undecodable(frame, e)
    if type(data) is parse.AggTradeEvent:  # the common case first
        try:
            price, qty = to_units(data.p), to_units(data.q)
        except ValueError as e:
            return BadMessage(f"aggTrade {data.a} of {data.s}: {e}", data.s)
        return TradeEvent(data.s, data.a, price, qty, data.f, data.l, data.T, data.m, data.E)
    if type(data) is parse.KlineHeadEvent:
        return _snapshot(data, frame)
    assert type(data) is parse.ServerShutdownEvent
    return ServerShutdown(data.E)


def _snapshot(head: parse.KlineHeadEvent, frame: Frame) -> CandleSnapshot:
    """A kline update::

    {"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1672515780000,
     "T":1672515839999,"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010",...,"x":false}}

    Its figures are read from the frame only when the feed asks for them: a forming
    kline's candle only to seed a symbol (the whole market sends ~3,000 a second, and
    reading one whole costs several times reading its times and ids); a final kline's
    candle and row (stored as the official candle) when the feed comes to it, after
    the trades that arrived with it (at 00:00 UTC the whole market's 9,600 finals come
    at once). Figures that cannot be read (not exact decimals, high below low, not even
    strings) make no candle and no row: only the times and ids count."""
    k = head.k
    read = partial(_final_of, frame) if k.x else partial(_forming_of, frame)
    return CandleSnapshot(head.s, k.i, k.t, k.T, k.f, k.L, k.x, head.E, read=read)


def _payload_of(frame: Frame) -> parse.KlinePayload | None:
    try:
        data = _combined_kline.decode(frame).data
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return data.k


def _candle_from(k: parse.KlinePayload | None) -> Candle | None:
    if k is None:
        return None
    try:
        return k.candle()
    except ValueError:  # not exact decimals, or high below low
        return None


def _forming_of(frame: Frame) -> tuple[Candle | None, None]:
    return _candle_from(_payload_of(frame)), None


def _final_of(frame: Frame) -> tuple[Candle | None, bytes | None]:
    """A final kline's candle and its row (only when the candle is readable)."""
    payload = _payload_of(frame)
    candle = _candle_from(payload)
    if payload is None or candle is None:
        return None, None
    return candle, parse.stream_kline_member(payload)


def _undecodable(frame: Frame, error: Exception) -> MarketEvent | None:
    text = frame if isinstance(frame, str) else frame.decode(errors="replace")
    if '"result"' in text or '"id"' in text:
        return None  # SUBSCRIBE replies
    if '"e":' in text and "aggTrade" not in text and "kline" not in text:
        return _UNKNOWN  # another event type: well-formed, just not ours
    log.warning("malformed stream message dropped (%s): %.200s", error, text)
    return BadMessage(f"{error}: {text[:200]}")


# the longest span between startTime and endTime /api/v3/aggTrades answers (-1127 beyond)
_AGG_TRADES_SPAN_MS = 3_600_000 - 1


class RestTradeHistory:
    """``/api/v3/aggTrades`` as the feed's ``TradeHistory``."""

    def __init__(self, rest: BinanceRest) -> None:
        self.rest = rest

    async def trades_after(
        self, symbol: str, agg_id: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        rows = await self.rest.agg_trades(
            symbol, from_id=agg_id + 1, limit=limit, priority=_priority(speculative)
        )
        return [r.trade() for r in rows]

    async def first_trades(
        self, symbol: str, start_ms: int, end_ms: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        # Binance answers -1127 for more than an hour between startTime and endTime
        start_ms = max(start_ms, end_ms - _AGG_TRADES_SPAN_MS)
        if end_ms < start_ms:
            return []
        rows = await self.rest.agg_trades(
            symbol, start_ms=start_ms, end_ms=end_ms, limit=limit, priority=_priority(speculative)
        )
        return [r.trade() for r in rows]


def _priority(speculative: bool) -> Priority:
    """A known hole is the most urgent request there is; a look after a silence only
    uses spare weight (at market scale thousands of quiet symbols would otherwise
    crowd out everything else)."""
    return Priority.RECONCILE if speculative else Priority.GAP_FILL
