"""The merge rule, pure: official candles win; live candles only after them.

Official members arrive as the stored JSON (Binance's 12-field arrays) and are passed
through as bytes, never decoded. The live side contributes the closed live candles not
yet confirmed (``live_closed``, and the ``previous`` of the ``live_candle`` value) and
the forming candle, each only when its open time is after ``klines_meta.latest`` (once
the official candle is stored, the live copy is not served for that open time): however
late the official data, the chart has no hole.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

from livecandle.store.codec import live_row

_enc = msgspec.json.Encoder()

OFFICIAL = b',"official"]'


def live_parts(
    live: bytes | None, latest: int | None, closed: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """The live candles to show after the official ones, ascending and unique by time:
    the closed ones not yet confirmed (``state: "unconfirmed"``), then the forming one
    (``state: "forming"``)."""
    floor = -1 if latest is None else latest
    out: list[dict[str, Any]] = []

    def add(c: Any, state: str) -> None:
        if isinstance(c, dict) and isinstance(c.get("time"), int) and c["time"] > floor:
            if not out or out[-1]["time"] < c["time"]:
                out.append({**c, "state": state})
            elif out[-1]["time"] == c["time"] and state == "unconfirmed":
                out[-1] = {**c, "state": state}  # the newer copy of the same candle

    for raw in closed or ():
        try:
            add(msgspec.json.decode(raw), "unconfirmed")
        except msgspec.DecodeError:
            continue
    value: Any = None
    if live:
        try:
            value = msgspec.json.decode(live)
        except msgspec.DecodeError:
            value = None
    if isinstance(value, dict):
        add(value.get("previous"), "unconfirmed")
        add({k: v for k, v in value.items() if k != "previous"}, "forming")
    return out


ENTRY_OVERHEAD = 512  # bytes of an entry besides its rows: key, tuples, list, version


class OfficialCache:
    """The official part of recent answers, by request, with the series version it was
    read at: while the version is current, Redis sends only the (small) live part.

    Bounded by entries and by bytes (the rows twice, members and joined, plus
    ``ENTRY_OVERHEAD`` each, so that empty answers cost something too); the least
    recently used go first. Requests choose the keys (any aligned ``start``), so
    without both bounds distinct queries grow it without limit."""

    def __init__(self, max_bytes: int = 64 << 20, max_entries: int = 10_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[Any, ...], tuple[bytes, list[bytes], bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def version(self, key: tuple[Any, ...]) -> bytes:
        item = self._items.get(key)
        return item[0] if item is not None else b""

    def get(self, key: tuple[Any, ...]) -> tuple[list[bytes], bytes] | None:
        """(members, their pre-joined chart rows) of a current entry; None when it was
        evicted after its version was read (other requests ran meanwhile)."""
        item = self._items.get(key)
        if item is None:
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item[1], item[2]

    def put(self, key: tuple[Any, ...], version: bytes, members: list[bytes]) -> bytes:
        self.misses += 1
        joined = b",".join(m[:-1] + OFFICIAL for m in members)
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= _cost(old[2])
        self._items[key] = (version, members, joined)
        self.size += _cost(joined)
        while (self.size > self.max_bytes or len(self._items) > self.max_entries) and self._items:
            _, (_, _, j) = self._items.popitem(last=False)
            self.size -= _cost(j)
        return joined


def _cost(joined: bytes) -> int:
    return ENTRY_OVERHEAD + len(joined) * 2


def chart_body(
    symbol: str,
    interval: str,
    official_rows: bytes,
    latest: int | None,
    live: list[dict[str, Any]],
) -> bytes:
    """``GET /api/klines``: official rows (12 fields + ``"official"``, pre-joined),
    ascending and unique by open time, then the live rows (+ ``"unconfirmed"`` /
    ``"forming"``)."""
    parts = [official_rows] if official_rows else []
    parts.extend(_enc.encode([*live_row(c), c["state"]]) for c in live)
    head = _enc.encode({"symbol": symbol, "interval": interval, "latest": latest})
    return head[:-1] + b',"candles":[' + b",".join(parts) + b"]}"


def binance_body(
    members: list[bytes],
    live: list[dict[str, Any]],
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> bytes:
    """``GET /api/v3/klines``: what Binance answers, from the cache: closed rows, then
    the forming row last; open times in ``[start_ms, end_ms]``; with a start the oldest
    ``limit`` rows, otherwise the newest ``limit``."""
    rows = list(members)
    for c in live:
        if (start_ms is None or c["time"] >= start_ms) and (end_ms is None or c["time"] <= end_ms):
            rows.append(_enc.encode(live_row(c)))
    if len(rows) > limit:
        rows = rows[:limit] if start_ms is not None else rows[-limit:]
    return b"[" + b",".join(rows) + b"]"
