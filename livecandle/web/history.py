"""History: older pages of official candles for the chart's infinite scrolling
(``GET /api/history``), from Redis and, beyond what is stored, from the exchange on
demand (``Status.fetch_older``: the fetcher stores them, so the next reader gets them
from Redis).

A series' first candle (its listing: the exchange has nothing older) ends the scrolling;
it is remembered here so that a page at the listing is answered without asking the
exchange again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import msgspec

from livecandle.domain.model import SeriesKey
from livecandle.store import Store
from livecandle.web.errors import ApiError
from livecandle.web.params import MAX_TIME_MS, Served, aligned
from livecandle.web.status import Status

log = logging.getLogger(__name__)

HISTORY_MAX_LIMIT = 1000  # one exchange request (weight 2) per page at most
_enc = msgspec.json.Encoder()


class History:
    """Older pages; concurrent readers of the same page share one exchange fetch."""

    def __init__(self, status: Status, store: Store, served: Served) -> None:
        self.status = status
        self.store = store
        self.served = served
        self.listing: dict[SeriesKey, int] = {}  # first open time, once the exchange said
        self._fetching: dict[tuple[SeriesKey, int, int], asyncio.Future[int | None]] = {}

    def query(self, q: Mapping[str, str]) -> tuple[SeriesKey, int, int]:
        series = self.served.series(q.get("symbol"), q.get("interval"))
        end_text = q.get("end")
        if end_text is None or not end_text.isdigit() or len(end_text) > 15:
            raise ApiError(
                400, "end", end_text, f"end={end_text!r}: an open time in ms is required"
            )
        end_ms = int(end_text)
        if end_ms > MAX_TIME_MS:
            raise ApiError(400, "end", end_ms, f"end={end_ms} is after {MAX_TIME_MS}")
        aligned("end", end_ms, series.interval)
        limit_text = q.get("limit", str(HISTORY_MAX_LIMIT))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= HISTORY_MAX_LIMIT:
            raise ApiError(
                400, "limit", limit_text, f"limit={limit_text!r}: 1 to {HISTORY_MAX_LIMIT}"
            )
        return series, end_ms, int(limit_text)

    async def page(self, q: Mapping[str, str]) -> bytes:
        """``{symbol, interval, candles: [[12 fields, "official"], ...], listing, source}``:
        the newest ``limit`` official candles opening at or before ``end``, ascending.
        ``listing`` is the series' first open time once known (nothing older exists);
        ``source`` says where the page came from: ``stored``, ``exchange``, or
        ``unavailable`` (fewer stored and this process cannot ask the exchange) or
        ``error`` (the exchange failed; ``error`` says how: ask again later)."""
        series, end_ms, limit = self.query(q)
        members = await self._stored(series, end_ms, limit)
        source = "stored"
        error: str | None = None
        listing = self.listing.get(series)
        if len(members) < limit and (listing is None or listing < _first(members, end_ms)):
            try:
                fetched = await self._fetch(series, end_ms, limit)
            except Exception as e:  # the exchange failed: the stored part, and why
                log.warning("older %s candles up to %d: %s", series, end_ms, e)
                error = f"the exchange did not answer: {e}"[:300]
                fetched = None
            if error is not None:
                source = "error"
            elif fetched is None:
                source = "unavailable"
            else:
                source = "exchange"
                members = await self._stored(series, end_ms, limit)
                if len(members) < limit:
                    # the whole range was asked for: whatever is older than the first
                    # row does not exist on the exchange
                    first = _first(members, series.interval.next_open(end_ms))
                    self.listing[series] = min(first, self.listing.get(series, first))
                    listing = self.listing[series]
        rows = b",".join(m[:-1] + b',"official"]' for m in members)
        head = _enc.encode(
            {
                "symbol": series.symbol,
                "interval": series.interval.name,
                "listing": listing,
                "source": source,
                "error": error,
            }
        )
        return head[:-1] + b',"candles":[' + rows + b"]}"

    async def _stored(self, series: SeriesKey, end_ms: int, limit: int) -> list[bytes]:
        read = await self.store.read_chart(series, None, end_ms, limit)
        return read.members or []

    async def _fetch(self, series: SeriesKey, end_ms: int, limit: int) -> int | None:
        key = (series, end_ms, limit)
        running = self._fetching.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._fetching[key] = fut
        try:
            result = await self.status.fetch_older(series, end_ms, limit)
            fut.set_result(result)
            return result
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: a waiter may not exist
            raise
        finally:
            del self._fetching[key]


def _first(members: list[bytes], default: int) -> int:
    """Open time of the oldest member (the JSON array's first field)."""
    if not members:
        return default
    head = members[0]
    return int(head[1 : head.index(b",")])
