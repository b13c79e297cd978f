"""A local copy of one symbol's order book, kept by Binance's documented snapshot + diff
algorithm ("How to manage a local order book correctly"); pure, no I/O.

Diff events (``<s>@depth@100ms``) are buffered until a REST snapshot (``/api/v3/depth``)
arrives. A snapshot older than the first buffered event (``lastUpdateId < U``) is useless:
ask for another. Otherwise buffered events with ``u <= lastUpdateId`` are dropped, the
first one left must straddle ``lastUpdateId + 1`` (``U <= lastUpdateId + 1 <= u``), and
every event after that applies on top: ``u <=`` the book's update id is stale (ignored),
``U >`` the book's update id + 1 is a gap (events were missed: the book is discarded and
synchronised again, the event that showed the gap buffered as the new first). Quantities
are absolute; 0 removes the level. Prices and quantities are exact int units of 1e-8.

Memory is bounded: at most ``max_buffer`` buffered events (the oldest dropped: the next
snapshot then only has to be newer), and a side longer than ``max_levels`` plus a tenth
is cut back to its best ``max_levels`` (only the top of the book is ever served).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import msgspec

from livecandle.domain.model import format_units, to_units

Level = tuple[int, int]  # (price units, quantity units)


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One ``depthUpdate`` event: the changes with update ids ``first_id..last_id``."""

    symbol: str
    first_id: int  # U
    last_id: int  # u
    bids: list[Level]
    asks: list[Level]
    event_ms: int = 0


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A REST ``/api/v3/depth`` answer."""

    last_update_id: int
    bids: list[Level]
    asks: list[Level]


class _Diff(msgspec.Struct):
    E: int
    s: str
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]


class _Combined(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Snapshot(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


_diff = msgspec.json.Decoder(_Diff)
_combined = msgspec.json.Decoder(_Combined)
_snapshot = msgspec.json.Decoder(_Snapshot)


def _levels(pairs: list[tuple[str, str]]) -> list[Level]:
    return [(to_units(p), to_units(q)) for p, q in pairs]


def parse_diff(raw: bytes | str) -> DepthDiff:
    """A raw ``depthUpdate`` payload (not wrapped)."""
    d = _diff.decode(raw)
    return DepthDiff(d.s, d.U, d.u, _levels(d.b), _levels(d.a), d.E)


def parse_combined(raw: bytes | str) -> tuple[str, msgspec.Raw]:
    """A combined-stream message: (stream name, the payload undecoded)."""
    m = _combined.decode(raw)
    return m.stream, m.data


def parse_snapshot(body: bytes) -> DepthSnapshot:
    s = _snapshot.decode(body)
    return DepthSnapshot(s.lastUpdateId, _levels(s.bids), _levels(s.asks))


class Outcome(StrEnum):
    BUFFERED = "buffered"  # waiting for a snapshot
    APPLIED = "applied"
    STALE = "stale"  # an event the book already holds: ignored
    GAP = "gap"  # events were missed: the book was discarded, a new snapshot is needed
    SYNCED = "synced"  # the snapshot was taken and the buffered events applied
    TOO_OLD = "too_old"  # the snapshot predates the buffered events: ask for another


class LocalBook:
    def __init__(self, symbol: str, max_levels: int = 1000, max_buffer: int = 1000) -> None:
        self.symbol = symbol
        self.max_levels = max_levels
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.update_id: int | None = None  # None: not in sync
        self.buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self.gaps = 0  # resynchronisations forced by a missed event
        self.stale = 0  # events ignored as already held

    @property
    def synced(self) -> bool:
        return self.update_id is not None

    @property
    def first_buffered_id(self) -> int | None:
        """The ``U`` of the oldest buffered event (a snapshot must not be older)."""
        return self.buffer[0].first_id if self.buffer else None

    def reset(self) -> None:
        """Out of sync: the book discarded, buffering again."""
        self.bids.clear()
        self.asks.clear()
        self.update_id = None
        self.buffer.clear()

    def on_diff(self, event: DepthDiff) -> Outcome:
        if self.update_id is None:
            self.buffer.append(event)
            return Outcome.BUFFERED
        if event.last_id <= self.update_id:
            self.stale += 1
            return Outcome.STALE
        if event.first_id > self.update_id + 1:
            self.gaps += 1
            self.reset()
            self.buffer.append(event)
            return Outcome.GAP
        self._apply(event)
        return Outcome.APPLIED

    def on_snapshot(self, snap: DepthSnapshot) -> Outcome:
        """Take a REST snapshot: SYNCED, TOO_OLD (keep buffering, fetch again) or GAP
        (the buffered events do not reach it: buffering again from the newest)."""
        first = self.first_buffered_id
        if first is not None and snap.last_update_id < first:
            return Outcome.TOO_OLD
        pending = [e for e in self.buffer if e.last_id > snap.last_update_id]
        if pending and pending[0].first_id > snap.last_update_id + 1:
            self.gaps += 1
            newest = self.buffer[-1]
            self.reset()
            self.buffer.append(newest)
            return Outcome.GAP
        self.buffer.clear()
        self.bids = dict(snap.bids)
        self.asks = dict(snap.asks)
        self.update_id = snap.last_update_id
        for event in pending:
            if self.on_diff(event) == Outcome.GAP:
                return Outcome.GAP
        return Outcome.SYNCED

    def _apply(self, event: DepthDiff) -> None:
        for side, levels in ((self.bids, event.bids), (self.asks, event.asks)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        self.update_id = event.last_id
        cap = self.max_levels + self.max_levels // 10
        if len(self.bids) > cap:
            self.bids = dict(heapq.nlargest(self.max_levels, self.bids.items()))
        if len(self.asks) > cap:
            self.asks = dict(heapq.nsmallest(self.max_levels, self.asks.items()))

    # -- views --------------------------------------------------------------------------

    def top(self, limit: int) -> tuple[list[Level], list[Level]]:
        """The best ``limit`` levels: bids descending, asks ascending."""
        return (
            heapq.nlargest(limit, self.bids.items()),
            heapq.nsmallest(limit, self.asks.items()),
        )

    def best(self) -> tuple[Level, Level] | None:
        """(best bid, best ask), None while a side is empty or the book not in sync."""
        if self.update_id is None or not self.bids or not self.asks:
            return None
        bid = max(self.bids)
        ask = min(self.asks)
        return (bid, self.bids[bid]), (ask, self.asks[ask])


def depth_body(update_id: int, bids: list[Level], asks: list[Level]) -> bytes:
    """Binance's ``/api/v3/depth`` body."""
    return (
        f'{{"lastUpdateId":{update_id},"bids":[{_pairs(bids)}],"asks":[{_pairs(asks)}]}}'
    ).encode()


def book_ticker_row(symbol: str, bid: Level, ask: Level) -> str:
    """One ``/api/v3/ticker/bookTicker`` object."""
    return (
        f'{{"symbol":"{symbol}","bidPrice":"{format_units(bid[0])}",'
        f'"bidQty":"{format_units(bid[1])}","askPrice":"{format_units(ask[0])}",'
        f'"askQty":"{format_units(ask[1])}"}}'
    )


def _pairs(levels: list[Level]) -> str:
    return ",".join(f'["{format_units(p)}","{format_units(q)}"]' for p, q in levels)
