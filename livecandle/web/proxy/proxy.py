"""Proxy: the drop-in Binance market-data API (DESIGN.md section 8). exchangeInfo is the
exchange's own (``info``); tickers and avgPrice of followed symbols come from livecandle's
own data (``tickers``); anything else, and any symbol not followed, is forwarded through
the one weight plan (``upstream``). A ticker window lacking older 1m candles has them
fetched in the background (``filling``); a FULL 24hr ticker's best bid/ask come from a
warm local order book (web/books.py) when there is one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import msgspec
from fastapi import Request
from fastapi.responses import Response

from livecandle.domain.intervals import DAY_MS
from livecandle.domain.model import format_units
from livecandle.exchange.binance import params as bp
from livecandle.web.api import Api
from livecandle.web.books import Books
from livecandle.web.mirror import Mirror
from livecandle.web.proxy.demand import Wishes
from livecandle.web.proxy.filling import OlderMinutes
from livecandle.web.proxy.info import ExchangeInfoKeeper, Unavailable
from livecandle.web.proxy.tickers import BookFn, LocalTickers, Window, ticker_type, window_ms
from livecandle.web.proxy.upstream import Answer, Upstream

_json = msgspec.json.Encoder()
ANSWER_TTL_S = 1.0
MAX_ANSWERS = 1024
WINDOW_READS = 32  # symbols' windows read from Redis at once
EXCHANGE_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK")


def respond(answer: Answer) -> Response:
    return Response(
        answer.body,
        answer.status,
        {k: v for k, v in answer.headers.items() if k.lower() != "content-type"},
        media_type=answer.headers.get("content-type", "application/json"),
    )


class Forwarded(bp.BinanceParamError):
    """An answer the upstream gave (or the proxy's own 429) where the caller expects
    bytes of a 200: raised, and rendered with its status, body and headers."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(-1000, "forwarded", answer.status)
        self.answer = answer
        self.headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}

    def body(self) -> dict[str, object]:
        try:
            value = msgspec.json.decode(self.answer.body)
        except msgspec.DecodeError:
            return {"code": -1000, "msg": self.answer.body[:200].decode(errors="replace")}
        return value if isinstance(value, dict) else {"code": -1000, "msg": "bad upstream body"}


class Proxy:
    def __init__(
        self,
        api: Api,
        mirror: Mirror,
        info: ExchangeInfoKeeper,
        upstream: Upstream,
        book: BookFn | None = None,
        wishes: Wishes | None = None,
        books: Books | None = None,
    ) -> None:
        self.api = api
        self.mirror = mirror
        self.info = info
        self.upstream = upstream
        self.local = LocalTickers(api.store, api.status.now_ms, "1h" in api.served.intervals)
        self.older = OlderMinutes(api.store, api.status)  # what a window lacks, fetched
        self._answers: dict[tuple[str, ...], tuple[float, bytes]] = {}  # kept ANSWER_TTL_S
        # computations under way: concurrent identical requests share one (single flight)
        self._flights: dict[tuple[str, ...], asyncio.Task[Response]] = {}
        self.books = books  # the local order books, when this process keeps them
        self.book = book or self.best_levels
        self.served_locally = 0
        self.wishes = wishes  # symbols asked for that are not followed: followed on demand

    def asked(self, symbols: Sequence[str]) -> None:
        """A request named ``symbols`` (klines, tickers, avgPrice): those not followed
        are wanted on demand (never awaited: the answer does not wait for Redis)."""
        if self.wishes is not None:
            self.wishes.asked(symbols)

    # -- the served (followed) symbols ----------------------------------------------------

    def local_names(self, names: Sequence[str]) -> bool:
        """All of ``names`` are followed with 1m candles: answered from Redis."""
        served = self.api.served
        known = set(served.symbols)
        return "1m" in served.intervals and all(n in known for n in names)

    async def _selection(self, q: Mapping[str, str], needs_symbols: bool) -> list[str] | None:
        """The symbols asked for (``_names``); None when some are not followed: the
        request is forwarded (and the symbols it names are wanted on demand)."""
        names = await self._names(q, needs_symbols)
        if "symbol" in q or "symbols" in q:  # all symbols: a wish for none
            self.asked(names)
        return names if self.local_names(names) else None

    async def _names(self, q: Mapping[str, str], needs_symbols: bool) -> list[str]:
        """The symbols asked for (Binance's checks against the exchange's listing and
        ``symbolStatus``)."""
        try:
            statuses = await self.info.statuses()
        except Unavailable:  # the exchange cannot be read: the followed symbols' own
            statuses = {s: self.mirror.status_of(s) for s in self.api.served.symbols}
        if needs_symbols and "symbol" not in q and "symbols" not in q:
            raise bp.BinanceParamError(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        names = bp.symbols_param(q, statuses)
        if len(set(names)) != len(names):
            raise bp.BinanceParamError(-1151, "Symbol is present multiple times in the list.")
        wanted = q.get("symbolStatus")
        if wanted is not None:
            if wanted not in EXCHANGE_STATUSES:
                raise bp.BinanceParamError(-1122, "Invalid symbolStatus.")
            if "symbol" in q and statuses[names[0]] != wanted:
                raise bp.BinanceParamError(
                    -1220, "The symbol's status does not match the requested symbolStatus."
                )
            names = [n for n in names if statuses[n] == wanted]
        return names

    async def forward(self, request: Request) -> Response:
        # a body is read only to be forwarded (never for a request that is refused)
        forwarding = request.method != "GET" and self.upstream.forward_signed
        body = await request.body() if forwarding else b""
        answer = await self.upstream.forward(
            request.url.path,
            request.url.query,
            {k.lower(): v for k, v in request.headers.items()},
            request.method,
            body,
        )
        return respond(answer)

    async def forwarded_bytes(self, path: str, q: Mapping[str, str]) -> bytes:
        answer = await self.upstream.forward(path, urlencode(q))
        if answer.status != 200:
            raise Forwarded(answer)
        return answer.body

    async def best_levels(self, names: Sequence[str]) -> Mapping[str, Sequence[str]]:
        """Best bid/ask of ``names``: a warm, in-sync local order book's top, else the
        exchange's bookTicker. No book is started for a ticker (a 24hr of every symbol
        would start hundreds): only books that depth or bookTicker requests started."""
        out: dict[str, Sequence[str]] = {}
        books = self.books
        for name in names:
            book = books.book(name, start=False) if books is not None else None
            best = book.best() if book is not None else None
            if best is not None:
                (bid, bid_qty), (ask, ask_qty) = best
                out[name] = tuple(format_units(v) for v in (bid, bid_qty, ask, ask_qty))
        missing = [n for n in names if n not in out]
        if missing:
            out.update(await self.forwarded_book(missing))
        return out

    async def forwarded_book(self, names: Sequence[str]) -> Mapping[str, Sequence[str]]:
        """Best bid/ask from the exchange's bookTicker (weight 2, or 4 for several;
        kept a second): the stand-in until a local order book answers."""
        q = {"symbol": names[0]} if len(names) == 1 else {}
        try:
            raw = await self.forwarded_bytes("/api/v3/ticker/bookTicker", q)
        except Forwarded:
            return {}
        rows = msgspec.json.decode(raw)
        rows = rows if isinstance(rows, list) else [rows]
        return {
            r["symbol"]: (r["bidPrice"], r["bidQty"], r["askPrice"], r["askQty"])
            for r in rows
            if isinstance(r, dict) and "symbol" in r
        }

    # -- endpoints ------------------------------------------------------------------------

    async def exchange_info(self, request: Request) -> Response:
        try:
            body = await self.info.body(dict(request.query_params))
        except Unavailable:  # the exchange cannot be read: what the universe stored
            return self.mirror.exchange_info(request)
        return Response(body, media_type="application/json")

    async def _windows(self, names: Sequence[str], width_ms: int) -> list[Window] | None:
        out: list[Window] = []
        for i in range(0, len(names), WINDOW_READS):  # a bounded number of reads at once
            batch = names[i : i + WINDOW_READS]
            windows = await asyncio.gather(*(self.local.window(n, width_ms) for n in batch))
            lacking = [n for n, w in zip(batch, windows, strict=True) if w is None]
            if lacking:  # not all stored yet: the exchange answers; older minutes fetched
                start = self.local.start_ms(width_ms)
                for n in lacking:
                    self.older.want(n, start)
                return None
            out.extend(w for w in windows if w is not None)
        return out

    async def tickers(self, request: Request, rolling: bool) -> Response:
        """``ticker/24hr`` and ``ticker``; the answer is kept ``ANSWER_TTL_S`` (many
        bots polling the same tickers cost one computation a second), and identical
        requests arriving while it is computed await that one computation (its answer
        or its error)."""
        q = dict(request.query_params)
        key = (request.url.path, *sorted(f"{k}={v}" for k, v in q.items()))
        kept = self._answers.get(key)
        if kept is not None and time.monotonic() - kept[0] < ANSWER_TTL_S:
            return Response(kept[1], media_type="application/json")
        flight = self._flights.get(key)
        if flight is None:
            if len(self._flights) >= MAX_ANSWERS:  # bounded: computed alone past the cap
                return await self._tickers(request, q, rolling)
            # a task of its own: a client that goes away does not cancel the others' answer
            flight = asyncio.create_task(self._tickers(request, q, rolling))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        # a Response is stateless bytes and headers: every waiter may send the same one
        return await asyncio.shield(flight)

    def _landed(self, key: tuple[str, ...], flight: asyncio.Task[Response]) -> None:
        """A computation ended: its 200 answer is kept ``ANSWER_TTL_S``."""
        self._flights.pop(key, None)
        if flight.cancelled() or flight.exception() is not None:
            return  # the exception reached every waiter (each awaited the task)
        response = flight.result()
        if response.status_code == 200 and response.media_type == "application/json":
            if len(self._answers) > MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = (time.monotonic(), bytes(response.body))

    async def _tickers(self, request: Request, q: dict[str, str], rolling: bool) -> Response:
        allowed = ("symbol", "symbols", "type", "symbolStatus")
        bp.only(q, (*allowed, "windowSize") if rolling else allowed)
        kind = ticker_type(q)
        width = window_ms(q.get("windowSize", "1d")) if rolling else DAY_MS
        names = await self._selection(q, needs_symbols=rolling)
        if rolling and names is not None and len(names) > 100:
            raise bp.BinanceParamError(
                -1101, "Too many values sent for parameter 'symbols', maximum allowed up to 100."
            )
        windows = None if names is None else await self._windows(names, width)
        if windows is None:
            return await self.forward(request)
        book: Mapping[str, Sequence[str]] = {}
        if kind == "FULL" and not rolling and names:
            book = await self.book(names)
        self.served_locally += 1
        out = [w.fields(kind, not rolling, book.get(w.symbol)) for w in windows]
        return _json_response(out[0] if "symbol" in q else out)

    async def ticker_price(self, request: Request) -> Response:
        """Followed symbols' last prices from Redis; the others' (and those with no data
        yet) from the exchange, in one forwarded request (weight 2 or 4, kept 1 s)."""
        q = dict(request.query_params)
        bp.only(q, ("symbol", "symbols", "symbolStatus"))
        names = await self._names(q, needs_symbols=False)
        if "symbol" in q or "symbols" in q:
            self.asked(names)
        known = set(self.api.served.symbols)
        mine = [n for n in names if n in known]
        values = await self.api.store.live_prices(mine)
        prices: dict[str, str] = {}
        for name, raw in zip(mine, values, strict=True):
            if raw is not None:
                prices[name] = msgspec.json.decode(raw)["price"]
            else:  # no trade seen yet: the newest official close
                close = await self.mirror.last_close(name)
                if close is not None:
                    prices[name] = close
        missing = [n for n in names if n not in prices]
        if missing:
            one = len(missing) == 1 and "symbol" in q
            asked = {"symbol": missing[0]} if one else {}  # all: weight 4, shared 1 s
            rows = msgspec.json.decode(await self.forwarded_bytes("/api/v3/ticker/price", asked))
            for row in rows if isinstance(rows, list) else [rows]:
                if isinstance(row, dict) and row.get("symbol") in missing:
                    prices[row["symbol"]] = row["price"]
        else:
            self.served_locally += 1
        out = [{"symbol": n, "price": prices[n]} for n in names if n in prices]
        if "symbol" in q:
            if not out:
                raise bp.BinanceParamError(-1121, "Invalid symbol.")
            return _json_response(out[0])
        return _json_response(out)

    async def avg_price(self, request: Request) -> Response:
        q = dict(request.query_params)
        bp.only(q, ("symbol",))
        names = await self._selection({"symbol": bp.mandatory(q, "symbol")}, False)
        avg = None if names is None else await self.local.avg_price(names[0])
        if avg is None:
            return await self.forward(request)
        self.served_locally += 1
        return _json_response(avg)


def _json_response(value: Any) -> Response:
    return Response(_json.encode(value), media_type="application/json")
