"""The emulator's order books as Binance serves them: REST ``depth`` and
``ticker/bookTicker``, the streams ``<s>@depth[@100ms]`` (diff events),
``<s>@depth<5|10|20>[@100ms]`` (partial books) and ``<s>@bookTicker``.

Cheap for a universe of thousands: a book (``book.SyntheticBook``) exists only for a
symbol whose depth someone subscribes to or asks for; it follows the last trade and
flickers once per 100 ms slot while subscribed, and a book nobody has asked for or
watched for ``idle_s`` is dropped (its update-id sequence goes on if it comes back). A
book-less symbol's best prices (``ticker/bookTicker`` of every symbol) are the ones a book
made now would show. Diff events carry the net change of every level since the previous
event of that speed, ``U`` = previous ``u`` + 1, so Binance's documented sync algorithm
works on them; a book watched again after a pause has moved on meanwhile, so a consumer
that was away (a cut connection) sees the gap it would see on Binance. Test controls
(``/_emulator/book``): the book at a recent update id, and dropping the next diff events
of a symbol (a gap the consumer must notice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from livecandle.emulator.book import BookGone, Levels, SyntheticBook, fresh_qty, grid_step, straddle
from livecandle.emulator.market import TICK, SymbolMarket
from livecandle.emulator.schedule import Market
from livecandle.emulator.tape import _hash64
from livecandle.emulator.universe import STATUSES
from livecandle.emulator.wire import units
from livecandle.exchange.binance import params as bp

_json = msgspec.json.Encoder()

DEPTH_MAX_LIMIT = 5000
ROUTES = ("depth", "ticker/bookTicker")
PARTIAL_LEVELS = (5, 10, 20)


def depth_weight(limit: int) -> int:
    """Binance's weight of ``/api/v3/depth`` by limit (since 2023-10-19)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def rest_weight(endpoint: str, q: Mapping[str, str]) -> int:
    """The weight of a ``depth`` or ``bookTicker`` request (a bad parameter: the least)."""
    if endpoint == "depth":
        limit = q.get("limit", "100")
        return depth_weight(int(limit)) if limit.isdigit() else 5
    return 2 if "symbol" in q else 4


@dataclass(frozen=True, slots=True)
class DepthStream:
    symbol: str  # upper case
    kind: str  # "diff", "partial" or "bookTicker"
    levels: int  # partial books: 5, 10 or 20
    fast: bool  # @100ms


def parse_stream(name: str) -> DepthStream | None:
    """``btcusdt@depth@100ms`` -> DepthStream; None for a name that is not a depth one."""
    symbol, _, kind = name.partition("@")
    if not symbol or symbol != symbol.lower():
        return None
    if kind == "bookTicker":
        return DepthStream(symbol.upper(), "bookTicker", 0, True)
    fast = kind.endswith("@100ms")
    if fast:
        kind = kind[: -len("@100ms")]
    if kind == "depth":
        return DepthStream(symbol.upper(), "diff", 0, fast)
    if kind.startswith("depth") and kind[5:] in {str(n) for n in PARTIAL_LEVELS}:
        return DepthStream(symbol.upper(), "partial", int(kind[5:]), fast)
    return None


def _pairs(levels: list[tuple[int, int]] | Levels) -> str:
    items = levels.items() if isinstance(levels, dict) else levels
    return ",".join(f'["{units(p)}","{units(q)}"]' for p, q in items)


def last_price(sm: SymbolMarket, now_ms: int) -> int:
    price = sm.last_price_before(now_ms + 1)
    if price is None:  # no trade yet: the fair price
        price = max(1, round(sm.path(now_ms) * 100)) * TICK
    return price


class DepthFeed:
    def __init__(
        self, market: Market, levels: int = 1000, idle_s: float = 60.0, journal: int = 4096
    ) -> None:
        self.market = market
        self.levels = levels
        self.idle_s = idle_s
        self.journal = journal
        self.books: dict[str, SyntheticBook] = {}
        self.streams: dict[str, set[DepthStream]] = {}  # by symbol
        self.asked_s: dict[str, float] = {}  # monotonic time a book was last asked for
        self.next_ids: dict[str, int] = {}  # update ids of a dropped book go on
        self.emitted: dict[tuple[str, bool], int] = {}  # (symbol, fast) -> last id sent
        self.unwatched: dict[str, int] = {}  # symbol -> the slot its last stream ended in
        self.tops: dict[str, tuple[int, int, int, int]] = {}  # last bookTicker sent
        self.drop_next: dict[str, int] = {}  # diff events to drop, by symbol
        self.dropped = 0
        self.events = 0
        self._slot = -1

    # -- books --------------------------------------------------------------------------

    def book(self, symbol: str, now_ms: int) -> SyntheticBook:
        """The symbol's book, made if needed, around its last trade."""
        book = self.books.get(symbol)
        sm = self.market.symbols[symbol]
        if book is None:
            key = _hash64(self.market.seed, symbol, "book")
            first = self.next_ids.get(symbol, 1_000_000 + key % 1_000_000_000)
            book = SyntheticBook(key, grid_step(sm.base_price), self.levels, first, self.journal)
            self.books[symbol] = book
        book.recentre(last_price(sm, now_ms))
        return book

    def best(self, symbol: str, now_ms: int) -> tuple[int, int, int, int]:
        """(bid, bid qty, ask, ask qty): the book's, or a fresh book's when there is none."""
        book = self.books.get(symbol)
        if book is not None:
            self.book(symbol, now_ms)
            return book.best_bid, book.bids[book.best_bid], book.best_ask, book.asks[book.best_ask]
        sm = self.market.symbols[symbol]
        key = _hash64(self.market.seed, symbol, "book")
        bid, ask = straddle(last_price(sm, now_ms), grid_step(sm.base_price))
        return bid, fresh_qty(key, bid), ask, fresh_qty(key, ask)

    def _drop_book(self, symbol: str) -> None:
        book = self.books.pop(symbol)
        self.next_ids[symbol] = book.update_id + 1
        self.asked_s.pop(symbol, None)
        self.tops.pop(symbol, None)
        for fast in (False, True):
            self.emitted.pop((symbol, fast), None)

    # -- subscriptions (the hub calls these as streams gain their first / lose their last
    #    connection) ----------------------------------------------------------------------

    @staticmethod
    def handles(stream: str) -> bool:
        return parse_stream(stream) is not None

    def add(self, stream: str) -> None:
        ds = parse_stream(stream)
        if ds is not None:
            self.streams.setdefault(ds.symbol, set()).add(ds)

    def remove(self, stream: str) -> None:
        ds = parse_stream(stream)
        if ds is None:
            return
        watched = self.streams.get(ds.symbol)
        if watched is not None:
            watched.discard(ds)
            if not watched:
                del self.streams[ds.symbol]
                self.asked_s[ds.symbol] = time.monotonic()  # idle from now
                self.unwatched[ds.symbol] = self._slot

    # -- the ticker ---------------------------------------------------------------------

    def tick(self, now_ms: int, send: Callable[[str, str], None], silent: set[str]) -> None:
        """Once per 100 ms slot: move the watched books, send their events (the 1000 ms
        ones when a second starts), drop books idle for ``idle_s``."""
        slot = now_ms // 100
        if slot == self._slot:
            return
        second = slot // 10 != self._slot // 10
        self._slot = slot
        listings = self.market.listings
        for symbol, watched in list(self.streams.items()):
            if symbol not in listings:
                continue
            book = self.book(symbol, now_ms)
            since = self.unwatched.pop(symbol, None)
            if since is not None:  # watched again: the market moved on meanwhile
                for _ in range(min(10, slot - since)):
                    book.noise()
                for fast in (False, True):
                    self.emitted.pop((symbol, fast), None)
            start = book.update_id
            book.noise()
            if symbol in silent:  # a stalled symbol: events are missed
                for fast in (False, True):
                    self.emitted[(symbol, fast)] = book.update_id
                continue
            for ds in watched:
                if ds.fast or second:
                    self._emit(symbol, book, ds, now_ms, send, start)
            for fast in (False, True):  # what was sent, or would have been
                if fast or second:
                    self.emitted[(symbol, fast)] = book.update_id
        mono = time.monotonic()
        for symbol in [s for s in self.books if s not in self.streams]:
            if mono - self.asked_s.get(symbol, 0.0) > self.idle_s or symbol not in listings:
                self._drop_book(symbol)
                self.unwatched.pop(symbol, None)

    def _emit(
        self,
        symbol: str,
        book: SyntheticBook,
        ds: DepthStream,
        now_ms: int,
        send: Callable[[str, str], None],
        start: int,
    ) -> None:
        """Send ``ds``'s event; a diff covers the changes since the last one of its speed
        (the first one of a newly watched book: this slot's, after ``start``)."""
        lower = symbol.lower()
        if ds.kind == "diff":
            name = f"{lower}@depth@100ms" if ds.fast else f"{lower}@depth"
            after = self.emitted.get((symbol, ds.fast), start)
            if book.update_id <= after:
                return
            try:
                first, bids, asks = book.changes(after)
            except BookGone:  # more changes than the journal holds: start from here
                first, bids, asks = book.changes(book.journal[0][0] - 1)
            if self.drop_next.get(symbol):
                self.drop_next[symbol] -= 1
                self.dropped += 1
                return
            send(
                name,
                f'{{"e":"depthUpdate","E":{now_ms},"s":"{symbol}","U":{first},'
                f'"u":{book.update_id},"b":[{_pairs(sorted(bids.items(), reverse=True))}],'
                f'"a":[{_pairs(sorted(asks.items()))}]}}',
            )
        elif ds.kind == "partial":
            suffix = "@100ms" if ds.fast else ""
            bids_top, asks_top = book.top(ds.levels)
            send(
                f"{lower}@depth{ds.levels}{suffix}",
                f'{{"lastUpdateId":{book.update_id},"bids":[{_pairs(bids_top)}],'
                f'"asks":[{_pairs(asks_top)}]}}',
            )
        else:
            top = (book.best_bid, book.bids[book.best_bid], book.best_ask, book.asks[book.best_ask])
            if self.tops.get(symbol) == top:
                return
            self.tops[symbol] = top
            send(f"{lower}@bookTicker", _book_ticker_event(symbol, book.update_id, top))
        self.events += 1

    # -- REST ---------------------------------------------------------------------------

    def _status(self, q: Mapping[str, str], symbol: str | None) -> str | None:
        wanted = q.get("symbolStatus")
        if wanted is None:
            return None
        if wanted not in STATUSES:
            raise bp.BinanceParamError(-1122, "Invalid symbolStatus.")
        if symbol is not None and self.market.status(symbol) != wanted:
            raise bp.BinanceParamError(
                -1220, "The symbol's status does not match the requested symbolStatus."
            )
        return wanted

    def depth(self, q: Mapping[str, str], now_ms: int) -> bytes:
        bp.only(q, ("symbol", "limit", "symbolStatus"))
        symbol = bp.symbol_param(q, self.market.symbols)
        limit = bp.optional_int(q, "limit")
        if limit is None:
            limit = 100
        elif limit < 1:
            raise bp.BinanceParamError(-1130, "Data sent for parameter 'limit' is not valid.")
        self._status(q, symbol)
        book = self.book(symbol, now_ms)
        self.asked_s[symbol] = time.monotonic()
        bids, asks = book.top(min(limit, DEPTH_MAX_LIMIT))
        return (
            f'{{"lastUpdateId":{book.update_id},"bids":[{_pairs(bids)}],"asks":[{_pairs(asks)}]}}'
        ).encode()

    def book_ticker(self, q: Mapping[str, str], now_ms: int) -> bytes:
        bp.only(q, ("symbol", "symbols", "symbolStatus"))
        names = bp.symbols_param(q, self.market.symbols)
        single = "symbol" in q
        wanted = self._status(q, names[0] if single else None)
        if wanted is not None and not single:
            names = [n for n in names if self.market.status(n) == wanted]
        rows = [_book_ticker_row(n, self.best(n, now_ms)) for n in names]
        return (rows[0] if single else "[" + ",".join(rows) + "]").encode()

    # -- controls -----------------------------------------------------------------------

    async def control(self, request: Request, now_ms: int) -> Response:
        """``GET /_emulator/book?symbol=S[&updateId=U]``: every level of the book (as it
        stood at update id U); ``POST {"drop_diffs": {"symbol": S, "count": 1}}``: the
        next diff events of S are not sent (their update ids are spent)."""
        if request.method == "POST":
            changes = msgspec.json.decode(await request.body(), type=dict[str, Any])
            drop = changes.get("drop_diffs")
            if drop is not None:
                symbol = str(drop["symbol"]).upper()
                self.drop_next[symbol] = self.drop_next.get(symbol, 0) + int(drop.get("count", 1))
            return _answer({"drop_next": self.drop_next, "dropped": self.dropped})
        symbol = request.query_params.get("symbol", "").upper()
        if symbol not in self.market.listings:
            return _answer({"error": f"unknown symbol {symbol!r}"}, 400)
        book = self.books.get(symbol)
        if book is None:
            return _answer({"error": f"{symbol} has no book now"}, 404)
        wanted = request.query_params.get("updateId")
        try:
            uid = book.update_id if wanted is None else int(wanted)
            bids, asks = book.at(uid)
        except (BookGone, ValueError) as e:
            return _answer({"error": str(e), "lastUpdateId": book.update_id}, 404)
        body = {
            "symbol": symbol,
            "lastUpdateId": uid,
            "bids": [[units(p), units(q)] for p, q in sorted(bids.items(), reverse=True)],
            "asks": [[units(p), units(q)] for p, q in sorted(asks.items())],
        }
        return _answer(body)

    def stats(self) -> dict[str, Any]:
        return {
            "books": len(self.books),
            "watched": len(self.streams),
            "events": self.events,
            "dropped": self.dropped,
        }


def _book_ticker_row(symbol: str, top: tuple[int, int, int, int]) -> str:
    b, bq, a, aq = top
    return (
        f'{{"symbol":"{symbol}","bidPrice":"{units(b)}","bidQty":"{units(bq)}",'
        f'"askPrice":"{units(a)}","askQty":"{units(aq)}"}}'
    )


def _book_ticker_event(symbol: str, update_id: int, top: tuple[int, int, int, int]) -> str:
    b, bq, a, aq = top
    return (
        f'{{"u":{update_id},"s":"{symbol}","b":"{units(b)}","B":"{units(bq)}",'
        f'"a":"{units(a)}","A":"{units(aq)}"}}'
    )


def _answer(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status, media_type="application/json")
