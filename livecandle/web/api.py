"""Api: request handling of the chart API (``/api/klines``, the live candle, the
metadata), separate from routing so tests and benchmarks can reach it.

Every bad input is a 4xx whose JSON names the field and the value; nothing here is
allowed to answer 500 for a bad request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from livecandle.config import Settings
from livecandle.domain.model import SeriesKey
from livecandle.store import LiveWrite, Store, StoreError
from livecandle.store.codec import live_value
from livecandle.store.leases import lease_owners
from livecandle.web.candles import OfficialCache, chart_body, live_parts
from livecandle.web.errors import ApiError
from livecandle.web.live_body import MAX_BODY, candle_from_body, text_field
from livecandle.web.params import ChartQuery, Served
from livecandle.web.status import Status

_enc = msgspec.json.Encoder()
log = logging.getLogger(__name__)

UNIVERSE_READ_PERIOD_S = 5.0  # a web process apart learns a listing this soon


# after a 413 the rest of the body is not wanted: the server closes the connection
# instead of reading (and discarding) whatever the client still sends
_CLOSE = {"Connection": "close"}


async def _body_within(request: Request, limit: int) -> bytes:
    """The request body, read as it arrives and refused (413) as soon as it passes
    ``limit`` bytes: a chunked upload without a length is never held whole."""
    why = f"body is larger than {limit} bytes"
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise ApiError(413, "body", length, why, _CLOSE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body", None, why, _CLOSE)
        chunks.append(chunk)
    return b"".join(chunks)


class Api:
    def __init__(self, status: Status, store: Store, settings: Settings) -> None:
        self.status = status
        self.store = store
        self.settings = settings
        self.served = Served(
            settings.symbols,
            settings.intervals,
            settings.selection,
            on_demand=settings.proxy_follow_cap > 0,
        )
        self.on_served_change: Callable[[], None] | None = None  # e.g. the realtime rooms
        self.cache = OfficialCache(max_entries=settings.read_cache_entries)
        self.started_s = time.monotonic()

    # -- the served symbols -------------------------------------------------------------

    async def load_universe(self) -> None:
        """Read the stored universe: the served symbols (with patterns) and their status."""
        if self.served.update(await self.store.universe()) and self.on_served_change:
            self.on_served_change()

    async def follow_universe(self, period_s: float = UNIVERSE_READ_PERIOD_S) -> None:
        """Keep the served symbols in step with the stored universe until cancelled."""
        while True:
            try:
                await self.load_universe()
            except StoreError as e:  # served as they were; read again next period
                log.warning("cannot read the stored universe: %s", e)
            await asyncio.sleep(period_s)

    async def symbols(self) -> dict[str, Any]:
        """``/api/symbols``: the served symbols and intervals, and for each symbol its
        status on the exchange (since when) and whether it is followed now."""
        entries = await self.store.universe()
        if self.served.update(entries) and self.on_served_change:
            self.on_served_change()
        status: list[dict[str, object]] = []
        for s in self.served.symbols:
            e = entries.get(s)
            if e is None:  # not read from the exchange yet (or no process follows it)
                status.append({"symbol": s, "status": "unknown", "followed": None})
            else:
                d = e.as_dict()
                del d["selected"]
                status.append(d)
        for s, e in sorted(entries.items()):  # on demand (warming up, or idle): not served
            if e.demand and not self.served.knows(s):
                d = e.as_dict()
                del d["selected"]
                status.append(d)
        owners = await lease_owners(self.store, self.served.symbols)
        if any(owners.values()):  # several workers share the symbols (leases): whose
            for d in status:
                d["owner"] = owners.get(str(d["symbol"]))
        return {
            "symbols": list(self.served.symbols),
            "intervals": list(self.served.intervals),
            "status": status,
        }

    # -- chart API ----------------------------------------------------------------------

    async def klines(self, q: Mapping[str, str]) -> Response:
        body = await self.klines_body(self.served.chart(q))
        return Response(body, media_type="application/json")

    async def klines_body(self, query: ChartQuery) -> bytes:
        series, start, end, limit = query.series, query.start_ms, query.end_ms, query.limit
        members, rows, latest, live_raw, closed = await self.official(series, start, end, limit)
        live = live_parts(live_raw, latest, closed)
        if end is not None:
            live = [c for c in live if c["time"] <= end]
        if start is not None:
            live = [c for c in live if c["time"] >= start]
        if start is not None and len(members) >= limit:
            live = []  # the page is full of official rows; more come with the next start
        return chart_body(series.symbol, series.interval.name, rows, latest, live)

    async def official(
        self, series: SeriesKey, start: int | None, end: int | None, limit: int
    ) -> tuple[list[bytes], bytes, int | None, bytes | None, list[bytes]]:
        """Official members (and their chart rows) via the version cache, with
        ``latest``, the live value and the unconfirmed closed candles read in the same
        snapshot."""
        key = (series, start, end, limit)
        cache = self.cache
        read = await self.store.read_chart(series, start, end, limit, cache.version(key))
        cached = cache.get(key) if read.members is None else None
        if read.members is None and cached is None:  # evicted while Redis answered
            read = await self.store.read_chart(series, start, end, limit, b"")
        if cached is not None:
            members, rows = cached
        else:
            members = read.members or []
            rows = cache.put(key, read.version, members)
        return members, rows, read.latest, read.live, read.closed

    async def live_candle(self, symbol: str | None, interval: str | None) -> Response:
        series = self.served.series(symbol, interval)
        read = await self.store.read_chart(series, limit=1)
        parts = live_parts(read.live, read.latest, read.closed)
        forming = next((c for c in parts if c["state"] == "forming"), None)
        unconfirmed = [c for c in parts if c["state"] == "unconfirmed"]
        previous = unconfirmed[-1] if unconfirmed else None
        return JSONResponse(
            {
                "symbol": series.symbol,
                "interval": series.interval.name,
                "latest": read.latest,
                "candle": forming,
                "previous": previous,
            }
        )

    async def save_live_candle(self, request: Request) -> Response:
        token = self.settings.write_token
        if not token:
            raise ApiError(
                403,
                None,
                None,
                "writing live candles is disabled (set LIVECANDLE_WRITE_TOKEN to enable it)",
            )
        # the header's bytes as sent (Starlette decodes them as latin-1), compared in
        # constant time: the answer's timing says nothing about how much of it matched
        auth = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(auth, b"Bearer " + token.encode()):
            raise ApiError(401, "Authorization", None, "missing or wrong bearer token")
        raw = await _body_within(request, MAX_BODY)
        try:
            body = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError) as e:
            why = str(e) if isinstance(e, msgspec.DecodeError) else "nested too deeply"
            raise ApiError(
                400, "body", raw[:80].decode(errors="replace"), f"body is not JSON: {why}"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "body", type(body).__name__, "body must be a JSON object")
        series = self.served.series(text_field(body, "symbol"), text_field(body, "interval"))
        candle = candle_from_body(body, series.interval)
        current = series.interval.open_of(self.status.now_ms())
        if candle.open_ms > current:
            raise ApiError(
                400,
                "time",
                candle.open_ms,
                f"time={candle.open_ms} is a future {series.interval.name} period "
                f"(the current one opens at {current})",
            )
        meta = await self.store.meta(series)
        if meta.latest is not None and candle.open_ms <= meta.latest:
            raise ApiError(
                409,
                "time",
                candle.open_ms,
                f"an official candle at or after "
                f"{candle.open_ms} is stored (latest {meta.latest}); live data "
                f"never replaces official data",
            )
        old = await self.store.live_candle(series)
        previous = None
        if old:
            with contextlib.suppress(msgspec.DecodeError):
                old_value = msgspec.json.decode(old)
                if isinstance(old_value, dict):
                    previous = old_value.get("previous")
        now = self.status.now_ms()
        value = live_value(series.symbol, series.interval.name, candle, False, None, False, now)
        value["previous"] = previous  # the stored one, as it is
        encoded = _enc.encode(value)
        message = _enc.encode({"time": now, "prices": [], "candles": [value]})
        await self.store.write_live([LiveWrite(series, encoded)], publish=message)
        return JSONResponse({"ok": True, "candle": value})

    async def metadata(self, symbol: str | None, interval: str | None) -> Response:
        series = self.served.series(symbol, interval)
        meta = await self.store.meta(series)
        gaps = await self.store.gaps(series)
        return JSONResponse(
            {
                "symbol": series.symbol,
                "interval": series.interval.name,
                "earliest": meta.earliest,
                "latest": meta.latest,
                "count": meta.count,
                "updated_ms": meta.updated_ms,
                "last_error": meta.last_error,
                "gaps": [{"start": a, "end": b} for a, b in gaps],
            }
        )
