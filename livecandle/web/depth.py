"""The proxy's ``GET /api/v3/depth`` and ``GET /api/v3/ticker/bookTicker``: answered from
the local order books (``books``) when warm, else forwarded to the exchange through the
one weight plan (``Priority.PROXY``), with Binance's parameters and error bodies.

``depth`` up to ``local_limit`` levels (100) comes from an in-sync book, with its
``lastUpdateId``; a larger limit, a ``symbolStatus`` filter or a cold book is forwarded
(and the first request starts the book). ``ticker/bookTicker`` of one symbol, or of a
list whose books are all warm, is the books' best levels; a list starts no book (a
hundred symbols would be a hundred snapshots) and every symbol (no parameter) is
forwarded. A symbol the exchange called invalid is
answered ``-1121`` here for ``invalid_ttl_s`` without asking again.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

import msgspec
from fastapi import Request
from fastapi.responses import Response

from livecandle.exchange.binance import params as bp
from livecandle.exchange.binance.order_book import LocalBook, book_ticker_row, depth_body
from livecandle.exchange.binance.rest import BinanceError, BinanceUnavailable
from livecandle.exchange.binance.weights import Priority
from livecandle.web.books import DEPTH, Books, depth_weight

BOOK_TICKER = "/api/v3/ticker/bookTicker"
DEPTH_MAX_LIMIT = 5000
_SYMBOL_RE = re.compile(r"[A-Z0-9-_.]{1,20}")
_enc = msgspec.json.Encoder()


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


def _symbol(q: Mapping[str, str]) -> str:
    symbol = bp.mandatory(q, "symbol")
    if not _SYMBOL_RE.fullmatch(symbol):
        raise bp.BinanceParamError(
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        )
    return symbol


_BAD_SYMBOLS = "Illegal characters found in parameter 'symbols'."


def _symbols(q: Mapping[str, str]) -> list[str]:
    try:
        names = msgspec.json.decode(q["symbols"], type=list[str])
    except msgspec.DecodeError:  # not JSON, or not a list of strings
        raise bp.BinanceParamError(-1100, _BAD_SYMBOLS) from None
    if not names or not all(_SYMBOL_RE.fullmatch(n) for n in names):
        raise bp.BinanceParamError(-1100, _BAD_SYMBOLS)
    if len(set(names)) != len(names):
        raise bp.BinanceParamError(-1151, "Symbol is present multiple times in the list.")
    if len(names) > 100:
        raise bp.BinanceParamError(
            -1101, "Too many values sent for parameter 'symbols', maximum allowed up to 100."
        )
    return names


class Depth:
    def __init__(
        self,
        books: Books,
        local_limit: int = 100,
        forward_timeout_s: float = 10.0,
        invalid_ttl_s: float = 300.0,
    ) -> None:
        self.books = books
        self.local_limit = local_limit
        self.forward_timeout_s = forward_timeout_s
        self.invalid_ttl_s = invalid_ttl_s
        self.invalid: dict[str, float] = {}  # symbol -> monotonic time the exchange said so
        self.served_local = 0
        self.forwarded = 0
        # the last body of each (symbol, limit) and the update id it shows: pollers of a
        # book that did not change since share one answer
        self._bodies: dict[tuple[str, int], tuple[int, bytes]] = {}

    def _known_invalid(self, symbol: str) -> bool:
        said = self.invalid.get(symbol)
        if said is None:
            return False
        if time.monotonic() - said > self.invalid_ttl_s:
            del self.invalid[symbol]
            return False
        return True

    async def depth(self, request: Request) -> Response:
        q = dict(request.query_params)
        bp.only(q, ("symbol", "limit", "symbolStatus"))
        symbol = _symbol(q)
        limit = bp.optional_int(q, "limit")
        if limit is None:
            limit = 100
        elif limit < 1:
            raise bp.BinanceParamError(-1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(limit, DEPTH_MAX_LIMIT)
        if self._known_invalid(symbol):
            raise bp.BinanceParamError(-1121, "Invalid symbol.")
        book = self.books.book(symbol)  # started here if cold: the next request is local
        if book is not None and limit <= self.local_limit and "symbolStatus" not in q:
            self.served_local += 1
            return _json(self._depth_body(symbol, limit, book))
        return await self._forward(DEPTH, q, depth_weight(limit), [symbol])

    def _depth_body(self, symbol: str, limit: int, book: LocalBook) -> bytes:
        update_id = book.update_id
        assert update_id is not None
        cached = self._bodies.get((symbol, limit))
        if cached is not None and cached[0] == update_id:
            return cached[1]
        body = depth_body(update_id, *book.top(limit))
        if len(self._bodies) >= 4 * self.books.max_books:  # bounded: odd limits are many
            self._bodies.clear()
        self._bodies[(symbol, limit)] = (update_id, body)
        return body

    def metrics(self) -> list[str]:
        """Prometheus lines: the books and how their requests were answered."""
        stats = self.books.stats()
        return [
            "# TYPE livecandle_order_books gauge",
            f"livecandle_order_books {stats['books']}",
            f'livecandle_order_books{{state="in_sync"}} {stats["in_sync"]}',
            "# TYPE livecandle_order_books_started_total counter",
            f"livecandle_order_books_started_total {stats['started']}",
            "# TYPE livecandle_order_books_stopped_total counter",
            f"livecandle_order_books_stopped_total {stats['stopped']}",
            "# TYPE livecandle_order_books_refused_total counter",
            f"livecandle_order_books_refused_total {stats['refused']}",
            "# TYPE livecandle_depth_requests_total counter",
            f'livecandle_depth_requests_total{{answer="local"}} {self.served_local}',
            f'livecandle_depth_requests_total{{answer="forwarded"}} {self.forwarded}',
        ]

    async def book_ticker(self, request: Request) -> Response:
        q = dict(request.query_params)
        bp.only(q, ("symbol", "symbols", "symbolStatus"))
        if "symbol" in q and "symbols" in q:
            raise bp.BinanceParamError(-1128, "Combination of optional parameters invalid.")
        if "symbol" in q:
            names, weight = [_symbol(q)], 2
        elif "symbols" in q:
            names, weight = _symbols(q), 4
        else:  # every symbol: forwarded, no book started for each
            return await self._forward(BOOK_TICKER, q, 4, [])
        if any(self._known_invalid(n) for n in names):
            raise bp.BinanceParamError(-1121, "Invalid symbol.")
        rows = []
        for name in names:
            # a list uses the books there are: 100 symbols must not start 100 snapshots
            book = self.books.book(name, start="symbol" in q)
            best = book.best() if book is not None else None
            if best is not None:
                rows.append(book_ticker_row(name, *best))
        if len(rows) == len(names) and "symbolStatus" not in q:
            self.served_local += 1
            body = rows[0] if "symbol" in q else "[" + ",".join(rows) + "]"
            return _json(body.encode())
        return await self._forward(BOOK_TICKER, q, weight, names)

    async def _forward(
        self, path: str, q: dict[str, str], weight: int, symbols: list[str]
    ) -> Response:
        """The exchange's answer, or its error with its status."""
        self.forwarded += 1
        rest = self.books.rest
        try:
            async with asyncio.timeout(self.forward_timeout_s):
                body = await rest.get(path, q, Priority.PROXY, weight)
        except BinanceError as e:
            if e.code == -1121:
                if len(self.invalid) > 10_000:  # bounded: garbage symbols are endless
                    self.invalid.clear()
                for s in symbols:  # a book started for it ends too
                    self.invalid[s] = time.monotonic()
                    self.books.stop(s)
            if e.code is None:
                return _json(_enc.encode({"code": -1000, "msg": e.msg}), 502)
            return _json(_enc.encode({"code": e.code, "msg": e.msg}), e.status)
        except (BinanceUnavailable, TimeoutError):
            return _json(
                _enc.encode(
                    {
                        "code": -1007,
                        "msg": "Timeout waiting for response from backend server. "
                        "Send status unknown; execution status unknown.",
                    }
                ),
                503,
            )
        return _json(body)
