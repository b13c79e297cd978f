"""The universe: which of the exchange's symbols are followed, and since when each has
the status it has. Pure: the exchange's listing comes in as ``Listing`` values, the
stored universe goes out as ``SymbolEntry`` values.

A selection is what ``LIVECANDLE_SYMBOLS`` says: explicit names (``BTCUSDT``), ``*``
(every symbol), ``*QUOTE`` (by quote asset, read from the listing, not from the name's
ending: ``*BTC`` must not select ``WBTC``-named pairs quoted in USDT) and any other glob
(``BTC*``, matched against the name). Only TRADING symbols are followed; a symbol that
leaves TRADING (BREAK, HALT, END_OF_DAY) or the listing (delisted) stops, and follows
again when it is back.

Symbols are also followed on demand (``Demand``): a symbol the proxy was asked for and
the configuration does not select, admitted (up to a cap) in Redis, is followed while it
is TRADING and wanted; dropped, it is ``idle`` (not followed, its stored data kept).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

TRADING = "TRADING"
DELISTED = "DELISTED"  # ours: a symbol the exchange no longer lists
ON_DEMAND = "on-demand"  # followed because clients asked for it
IDLE = "idle"  # was followed on demand; nobody asked for it in a while

_QUOTE_PATTERN = re.compile(r"\*([A-Z0-9]+)")
_PATTERN_CHARS = re.compile(r"[A-Z0-9*?\[\]!]+")


def is_pattern(item: str) -> bool:
    return any(c in item for c in "*?[")


@dataclass(frozen=True, slots=True)
class Listing:
    """One symbol of the exchange's ``exchangeInfo``."""

    symbol: str
    status: str  # the exchange's word: TRADING, BREAK, HALT, END_OF_DAY, ...
    base: str = ""
    quote: str = ""
    tick_size: str = ""  # PRICE_FILTER tickSize, as the exchange wrote it


@dataclass(frozen=True, slots=True)
class SymbolEntry:
    """A symbol the universe knows (listed now, or once): its status since when, and
    whether this configuration follows it. Stored in Redis for web processes apart."""

    symbol: str
    status: str
    since_ms: int
    followed: bool
    selected: bool  # named or matched by the selection (followed when TRADING)
    base: str = ""
    quote: str = ""
    tick_size: str = ""
    demand: str = ""  # ON_DEMAND, IDLE, or "" (never asked for, or selected)
    demand_since_ms: int = 0  # since when it is on demand (admitted) or idle
    asked_ms: int = 0  # when a client last asked for it (as the follower last read it)
    warm_ms: int = 0  # when its history was stored (the proxy answers it from then on)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "symbol": self.symbol,
            "status": self.status.lower(),
            "since_ms": self.since_ms,
            "followed": self.followed,
            "selected": self.selected,
            "base": self.base,
            "quote": self.quote,
            "tick_size": self.tick_size,
        }
        if self.demand:
            out["demand"] = self.demand
            out["demand_since_ms"] = self.demand_since_ms
            out["asked_ms"] = self.asked_ms
            out["warm_ms"] = self.warm_ms or None
        return out

    @property
    def served_on_demand(self) -> bool:
        """Followed on demand and warm: answered from livecandle's own data."""
        return self.demand == ON_DEMAND and self.followed and self.warm_ms > 0

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> SymbolEntry:
        since = d.get("since_ms")
        return cls(
            symbol=str(d["symbol"]),
            status=str(d["status"]).upper(),
            since_ms=since if isinstance(since, int) else 0,
            followed=d.get("followed") is True,
            selected=d.get("selected") is True,
            base=str(d.get("base", "")),
            quote=str(d.get("quote", "")),
            tick_size=str(d.get("tick_size", "")),
            demand=str(d.get("demand", "")),
            demand_since_ms=_int(d.get("demand_since_ms")),
            asked_ms=_int(d.get("asked_ms")),
            warm_ms=_int(d.get("warm_ms")),
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


@dataclass(frozen=True, slots=True)
class Demand:
    """A symbol admitted on demand (as Redis holds it): since when, when last asked for,
    and when its history was stored (0: not yet)."""

    since_ms: int
    asked_ms: int
    warm_ms: int = 0


@dataclass(frozen=True, slots=True)
class Selection:
    """Explicit names (followed as today) and patterns (resolved from the listing)."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> Selection:
        """``items`` as ``LIVECANDLE_SYMBOLS`` splits them (upper case); raises
        ValueError naming a pattern that cannot be one."""
        names: list[str] = []
        patterns: list[str] = []
        for item in items:
            if is_pattern(item):
                if not _PATTERN_CHARS.fullmatch(item):
                    raise ValueError(f"symbol pattern {item!r} has characters no symbol has")
                patterns.append(item)
            else:
                names.append(item)
        return cls(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(patterns)))

    def selects(self, listing: Listing) -> bool:
        if listing.symbol in self.names:
            return True
        for p in self.patterns:
            if p == "*":
                return True
            quote = _QUOTE_PATTERN.fullmatch(p)
            if quote is not None and listing.quote:
                if listing.quote == quote.group(1):
                    return True
            elif fnmatch.fnmatchcase(listing.symbol, p):
                return True
        return False

    def selects_name(self, symbol: str) -> bool:
        """By the name alone (a stored entry without its listing)."""
        return self.selects(Listing(symbol, TRADING))


@dataclass(frozen=True, slots=True)
class Change:
    """What one reading of the listing changed: symbols to start and to stop following,
    and explicitly named symbols the exchange does not trade (reported)."""

    follow: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    not_trading: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.follow or self.stop)


def resolve(
    selection: Selection,
    known: Mapping[str, SymbolEntry],
    listings: Iterable[Listing],
    now_ms: int,
    following: Iterable[str] = (),
    demand: Mapping[str, Demand] | None = None,
) -> tuple[dict[str, SymbolEntry], Change]:
    """The universe after reading ``listings`` (the whole exchangeInfo), from ``known``
    (the universe before, e.g. as stored): every entry with its status since when it has
    it, and what changes from ``following`` (the symbols followed until now). A known
    symbol missing from the listing is DELISTED. ``demand``: the symbols admitted on
    demand (followed while TRADING unless the selection selects them anyway); one that
    was on demand and no longer is becomes IDLE."""
    demand = demand or {}
    out: dict[str, SymbolEntry] = {}
    for lst in listings:
        selected = selection.selects(lst)
        wanted = None if selected else demand.get(lst.symbol)
        followed = (selected or wanted is not None) and lst.status == TRADING
        old = known.get(lst.symbol)
        since = old.since_ms if old is not None and old.status == lst.status else now_ms
        entry = SymbolEntry(
            lst.symbol, lst.status, since, followed, selected, lst.base, lst.quote, lst.tick_size
        )
        out[lst.symbol] = _with_demand(entry, old, wanted, now_ms)
    for symbol, old in known.items():
        if symbol not in out:
            since = old.since_ms if old.status == DELISTED else now_ms
            gone = replace(old, status=DELISTED, since_ms=since, followed=False)
            out[symbol] = _with_demand(gone, old, None, now_ms)
    was = set(following)
    now = {s for s, e in out.items() if e.followed}
    not_trading = tuple(n for n in selection.names if n not in out or out[n].status != TRADING)
    return out, Change(tuple(sorted(now - was)), tuple(sorted(was - now)), not_trading)


def _with_demand(
    entry: SymbolEntry, old: SymbolEntry | None, wanted: Demand | None, now_ms: int
) -> SymbolEntry:
    """``entry`` with its demand: admitted (since when), or idle (since when) when it
    was admitted before and is not now."""
    if wanted is not None:
        return replace(
            entry,
            demand=ON_DEMAND,
            demand_since_ms=wanted.since_ms,
            asked_ms=wanted.asked_ms,
            warm_ms=wanted.warm_ms,
        )
    if old is not None and old.demand and not entry.selected:  # its data is kept
        return replace(
            entry,
            demand=IDLE,
            demand_since_ms=old.demand_since_ms if old.demand == IDLE else now_ms,
            asked_ms=old.asked_ms,
            warm_ms=0,
        )
    return entry
