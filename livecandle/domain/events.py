"""Market events: what an exchange's live streams tell, in domain terms.

The exchange adapter (``exchange/binance/feed_source.py``) turns wire frames into these;
the live side (``live/feed.py``) consumes them and never sees a wire field. Also the two
protocols between them: the frame decoder, and the trade history the feed asks for when
the stream lost trades.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar

from livecandle.domain.model import Candle, Trade


@dataclass(slots=True)  # not frozen: one is built per trade, and frozen costs 5x that
class TradeEvent:
    """One aggregate trade of ``symbol``, as streamed at exchange time ``event_ms``: the
    fields of a ``Trade`` (amounts in 1e-8 units), kept flat so the common case needs no
    second object."""

    symbol: str
    agg_id: int
    price: int
    quantity: int
    first_id: int
    last_id: int
    time_ms: int
    buyer_is_maker: bool
    event_ms: int

    def trade(self) -> Trade:
        return Trade(
            self.agg_id,
            self.price,
            self.quantity,
            self.first_id,
            self.last_id,
            self.time_ms,
            self.buyer_is_maker,
        )


_SNAPSHOT_FIELDS = (
    "symbol",
    "interval",
    "open_ms",
    "close_ms",
    "first_trade_id",
    "last_trade_id",
    "final",
    "event_ms",
    "candle",
    "row",
)


class CandleSnapshot:
    """The exchange's own view of a candle at exchange time ``event_ms``: forming, or
    ``final`` (closed). It covers the individual trades ``first_trade_id`` to
    ``last_trade_id``; both are -1 while its period has no trade yet. ``candle`` is None
    when the exchange's figures cannot be read exactly: the times and ids still count.
    ``row``, on a readable final snapshot: the exchange's own record of the candle in the
    stored (official) form, opaque here, written as it is.

    ``read``, instead of ``candle`` and ``row``: how to read the figures (the candle, and
    on a final snapshot its row), called when either is first asked for. Most snapshots
    are looked at only for their times and ids (the whole market's kline streams send
    ~3,000 a second; a forming candle's figures are needed only to seed a symbol), and
    reading eleven exact amounts costs more than all the rest of a snapshot; a final one
    is read when the feed comes to it (at 00:00 UTC the whole market's 9,600 arrive at
    once, and trades go first). A plain slotted class, not a frozen dataclass: one is built
    per kline message, and frozen costs several times that."""

    __slots__ = (
        "_candle",
        "_read",
        "_row",
        "close_ms",
        "event_ms",
        "final",
        "first_trade_id",
        "interval",
        "last_trade_id",
        "open_ms",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        interval: str,  # the interval's name, e.g. "1m"
        open_ms: int,
        close_ms: int,
        first_trade_id: int,
        last_trade_id: int,
        final: bool,
        event_ms: int,
        candle: Candle | None = None,
        row: bytes | None = None,
        read: Callable[[], tuple[Candle | None, bytes | None]] | None = None,
    ) -> None:
        self.symbol = symbol
        self.interval = interval
        self.open_ms = open_ms
        self.close_ms = close_ms
        self.first_trade_id = first_trade_id
        self.last_trade_id = last_trade_id
        self.final = final
        self.event_ms = event_ms
        self._candle = candle
        self._read = read
        self._row = row

    def _read_once(self) -> None:
        read = self._read
        if read is not None:
            (self._candle, self._row), self._read = read(), None

    @property
    def candle(self) -> Candle | None:
        self._read_once()
        return self._candle

    @property
    def row(self) -> bytes | None:
        self._read_once()
        return self._row

    def _fields(self) -> tuple[object, ...]:
        return (
            self.symbol,
            self.interval,
            self.open_ms,
            self.close_ms,
            self.first_trade_id,
            self.last_trade_id,
            self.final,
            self.event_ms,
            self.candle,
            self.row,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CandleSnapshot):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # compared by value, read lazily

    def __repr__(self) -> str:
        names = _SNAPSHOT_FIELDS
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
        return f"CandleSnapshot({inner})"


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """The exchange announced it will close the connection (the stream reconnects)."""

    event_ms: int


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message that could not be read (malformed, or amounts that are not exact
    decimals); ``symbol`` when it is known whose it was."""

    reason: str
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A well-formed event of a kind the live side does not use."""


MarketEvent: TypeAlias = TradeEvent | CandleSnapshot | ServerShutdown | BadMessage | UnknownMessage

Frame_contra = TypeVar("Frame_contra", contravariant=True)


class EventDecoder(Protocol[Frame_contra]):
    """Turns one raw message of a stream into its event; None for a message that is no
    market event (a reply to a subscription)."""

    def __call__(self, frame: Frame_contra, /) -> MarketEvent | None: ...


class TradeHistory(Protocol):
    """The exchange's record of past trades, for the trades a stream lost."""

    async def trades_after(
        self, symbol: str, agg_id: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        """Up to ``limit`` trades of ``symbol`` following aggregate trade ``agg_id``,
        oldest first. ``speculative``: asked to find out whether any were missed (a
        silence), not to fill a known hole: it may wait behind everything urgent."""
        ...

    async def first_trades(
        self, symbol: str, start_ms: int, end_ms: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        """The oldest ``limit`` trades of ``symbol`` made from ``start_ms`` to ``end_ms``
        (both included), oldest first; an exchange may look back a bounded span only
        (Binance: the hour up to ``end_ms``)."""
        ...
