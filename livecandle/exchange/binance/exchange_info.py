"""exchangeInfo's parameters as Binance reads them, for any server of the API (the
emulator, livecandle's proxy): which symbols ``symbol``, ``symbols``, ``permissions``,
``symbolStatus`` select, and the answer's bytes joined from each symbol's cached bytes.

Errors: -1121 unknown symbol, -1122 bad ``symbolStatus``, -1151 duplicate symbols, -1128
a forbidden combination, -1100 a malformed list, -1104 unread parameters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import msgspec

from livecandle.exchange.binance import params as bp

EXCHANGE_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK")
PARAMETERS = ("symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus")
_json = msgspec.json.Encoder()


def permissions_param(value: str) -> set[str]:
    """``permissions=SPOT`` or ``permissions=["MARGIN","LEVERAGED"]``."""
    if value.startswith("["):
        try:
            return set(msgspec.json.decode(value, type=list[str]))
        except msgspec.DecodeError:
            raise bp.BinanceParamError(
                -1100, "Illegal characters found in parameter 'permissions'."
            ) from None
    return {value}


def select(
    q: Mapping[str, str],
    statuses: Mapping[str, str],
    permissions: Mapping[str, Collection[str]] | None = None,
) -> list[str]:
    """The symbols a query asks for, in listing order; Binance's errors otherwise.
    ``permissions``: each symbol's permissions (every one named in its permissionSets);
    without it a ``permissions`` parameter selects every symbol."""
    bp.only(q, PARAMETERS)
    chosen = [k for k in ("symbol", "symbols", "permissions") if k in q]
    if len(chosen) > 1 or ("symbolStatus" in q and chosen[:1] in (["symbol"], ["symbols"])):
        raise bp.BinanceParamError(-1128, "Combination of optional parameters invalid.")
    if "symbols" in q:
        try:
            names = msgspec.json.decode(q["symbols"], type=list[str])
        except msgspec.DecodeError:
            raise bp.BinanceParamError(
                -1100, "Illegal characters found in parameter 'symbols'."
            ) from None
        if len(set(names)) != len(names):
            raise bp.BinanceParamError(-1151, "Symbol is present multiple times in the list.")
        if any(n not in statuses for n in names):
            raise bp.BinanceParamError(-1121, "Invalid symbol.")
        return names
    names = bp.symbols_param(q, statuses)
    if "permissions" in q and permissions is not None:
        wanted = permissions_param(q["permissions"])
        names = [n for n in names if wanted.intersection(permissions.get(n, ()))]
    status = q.get("symbolStatus")
    if status is not None:
        if status not in EXCHANGE_STATUSES:
            raise bp.BinanceParamError(-1122, "Invalid symbolStatus.")
        names = [n for n in names if statuses[n] == status]
    return names


def show_permission_sets(q: Mapping[str, str]) -> bool:
    return q.get("showPermissionSets", "true").lower() != "false"


def join(head: Mapping[str, Any], symbols: Iterable[bytes]) -> bytes:
    """The whole answer: ``head`` (timezone, serverTime, rateLimits...) then the
    symbols' encoded objects."""
    return _json.encode(head)[:-1] + b',"symbols":[' + b",".join(symbols) + b"]}"
