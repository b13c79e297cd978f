"""Binance's request-parameter rules and error bodies, for servers that speak its API
(the emulator, and livecandle's own Binance-compatible mirror)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import msgspec

from livecandle.domain.intervals import INTERVALS, Interval

_LONG_RE = re.compile(r"[0-9]{1,20}")
_INT_RE = re.compile(r"-?[0-9]{1,10}")


class BinanceParamError(Exception):
    """An error Binance answers with HTTP 400 and ``{"code": ..., "msg": ...}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def mandatory(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise BinanceParamError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def optional_long(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not _LONG_RE.fullmatch(value):
        raise BinanceParamError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(value)


def optional_int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not _INT_RE.fullmatch(value):
        raise BinanceParamError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^-?[0-9]{{1,10}}$'.",
        )
    return int(value)


def only(params: Mapping[str, str], allowed: Collection[str]) -> None:
    extra = [k for k in params if k not in allowed]
    if extra:
        read = len(params) - len(extra)
        raise BinanceParamError(
            -1104,
            f"Not all sent parameters were read; read '{read}' parameter(s) but was sent "
            f"'{len(params)}'.",
        )


def symbol_param(params: Mapping[str, str], known: Collection[str]) -> str:
    symbol = mandatory(params, "symbol")
    if symbol.upper() not in known:
        raise BinanceParamError(-1121, "Invalid symbol.")
    return symbol.upper()


def symbols_param(params: Mapping[str, str], known: Collection[str]) -> list[str]:
    """``symbol=X`` or ``symbols=["X","Y"]`` (JSON), as Binance reads them; every known
    symbol when neither is given."""
    if "symbol" in params:
        if "symbols" in params:
            raise BinanceParamError(-1128, "Combination of optional parameters invalid.")
        return [symbol_param(params, known)]
    if "symbols" not in params:
        return list(known)
    try:
        names = msgspec.json.decode(params["symbols"], type=list[str])
    except msgspec.DecodeError:
        raise BinanceParamError(-1100, "Illegal characters found in parameter 'symbols'.") from None
    if any(n not in known for n in names):
        raise BinanceParamError(-1121, "Invalid symbol.")
    return names


def interval_param(params: Mapping[str, str]) -> Interval:
    name = mandatory(params, "interval")
    interval = INTERVALS.get(name)
    if interval is None:
        raise BinanceParamError(-1120, "Invalid interval.")
    return interval


def to_ms(value: int | None) -> int | None:
    """Binance accepts µs since 2024-12: a 16-digit time is microseconds."""
    if value is not None and value >= 10**15:
        return value // 1000
    return value


@dataclass(frozen=True, slots=True)
class KlinesQuery:
    symbol: str
    interval: Interval
    start_ms: int | None
    end_ms: int | None
    limit: int


def klines_query(params: Mapping[str, str], known_symbols: Collection[str]) -> KlinesQuery:
    """Validate ``/api/v3/klines`` parameters exactly as Binance does."""
    only(params, ("symbol", "interval", "startTime", "endTime", "limit", "timeZone"))
    symbol = symbol_param(params, known_symbols)
    interval = interval_param(params)
    start = to_ms(optional_long(params, "startTime"))
    end = to_ms(optional_long(params, "endTime"))
    limit = optional_int(params, "limit")
    tz = params.get("timeZone")
    if tz not in (None, "0", "+0", "00:00", "+00:00", "0:00"):
        raise BinanceParamError(-1130, "Data sent for parameter 'timeZone' is not valid.")
    if limit is None:
        limit = 500
    elif limit < 1:
        raise BinanceParamError(-1130, "Data sent for parameter 'limit' is not valid.")
    limit = min(limit, 1000)
    if start is not None and end is not None and start > end:
        raise BinanceParamError(-1128, "Combination of optional parameters invalid.")
    return KlinesQuery(symbol, interval, start, end, limit)
