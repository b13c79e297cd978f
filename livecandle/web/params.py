"""Query parameters of the chart API: the one validator of ``/api/klines`` (used by the
ASGI fast path and by the framework's route alike) and its OpenAPI description.

Every refusal is an ``ApiError`` naming the field and the value as sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NamedTuple

from pydantic import Field, TypeAdapter, ValidationError

from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.domain.model import SeriesKey
from livecandle.domain.universe import Listing, Selection, SymbolEntry
from livecandle.web.errors import ApiError, shown_repr

MAX_CHART_LIMIT = 5000
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: later times are typos
DEFAULT_LIMIT = 1000

# Integers are read as the framework reads query parameters (pydantic's lax mode:
# "+5", " 5", "1.0" and "1_000" are numbers; refusals in pydantic's words), except a
# plain number of up to 18 digits, read directly (the usual case, and cheaper): a time
# out of range is then refused by ``aligned``, naming the value as a number.
_TIME = TypeAdapter(Annotated[int, Field(ge=0, le=MAX_TIME_MS)])
_LIMIT = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_CHART_LIMIT)])
_ANY = 10**18


class ChartQuery(NamedTuple):  # a tuple: built on every chart read, cheaply
    """A valid ``/api/klines`` query: open times aligned, ``start_ms <= end_ms``."""

    series: SeriesKey
    start_ms: int | None
    end_ms: int | None
    limit: int


def invalid(field: str | None, value: Any, why: str) -> ApiError:
    """The 400 of a parameter the framework's validation refuses (``why``: its message)."""
    return ApiError(
        400,
        field,
        value if isinstance(value, str | int | None) else None,
        f"{field}={shown_repr(value)}: {why}",
    )


SHOWN_SYMBOLS = 20  # a refusal names the served symbols up to this many


class Served:
    """The symbols and intervals this process serves, and the checks against them.

    The explicitly configured symbols are always served; with patterns
    (``LIVECANDLE_SYMBOLS=*USDT``) so is every symbol of the stored universe they select,
    whatever its status now (a stopped symbol's stored data is still served), as
    ``update`` learns it; with ``on_demand`` so is every symbol followed on demand once
    its history is stored (until then the proxy forwards its requests)."""

    def __init__(
        self,
        symbols: Iterable[str],
        intervals: Iterable[Interval],
        selection: Selection | None = None,
        on_demand: bool = False,
    ) -> None:
        self.fixed = tuple(symbols)
        self.selection = selection
        self.on_demand = on_demand
        self.symbols = self.fixed
        self._known = self._fixed_set = frozenset(self.fixed)
        self.entries: dict[str, SymbolEntry] = {}
        self.intervals = {i.name: i for i in intervals}

    @property
    def dynamic(self) -> bool:
        """The served symbols follow the universe (patterns configured, or on demand)."""
        return self.on_demand or (self.selection is not None and bool(self.selection.patterns))

    def update(self, entries: dict[str, SymbolEntry]) -> bool:
        """The stored universe as read now; True if the served symbols changed."""
        self.entries = entries
        if not self.dynamic:
            return False
        selection = self.selection or Selection()
        chosen = [
            s
            for s, e in sorted(entries.items())
            if s not in self._fixed_set
            and (
                (self.on_demand and e.served_on_demand)
                or (selection.patterns and selection.selects(Listing(s, e.status, e.base, e.quote)))
            )
        ]
        symbols = self.fixed + tuple(chosen)
        if symbols == self.symbols:
            return False
        self.symbols, self._known = symbols, frozenset(symbols)
        return True

    def knows(self, symbol: str) -> bool:
        return symbol in self._known

    def described(self) -> str:
        """The served symbols for a refusal: named when few, counted when many."""
        if len(self.symbols) <= SHOWN_SYMBOLS:
            return ", ".join(self.symbols)
        return f"{len(self.symbols)} symbols, listed by /api/symbols"

    def series(self, symbol: str | None, interval: str | None) -> SeriesKey:
        if not symbol:
            raise ApiError(400, "symbol", symbol, "symbol is required (e.g. BTCUSDT)")
        if symbol not in self._known:
            raise ApiError(
                400,
                "symbol",
                symbol,
                f"symbol {shown_repr(symbol)} is not served (served: {self.described()})",
            )
        if not interval:
            raise ApiError(400, "interval", interval, "interval is required (e.g. 1m)")
        served = self.intervals.get(interval)
        if served is None:
            known = "is not a Binance interval" if interval not in INTERVALS else "is not served"
            raise ApiError(
                400,
                "interval",
                interval,
                f"interval {shown_repr(interval)} {known} (served: {', '.join(self.intervals)})",
            )
        return SeriesKey(symbol, served)

    def chart(self, q: Mapping[str, str]) -> ChartQuery:
        """The query of ``/api/klines`` (the raw parameters; unknown ones are ignored)."""
        symbol, interval = q.get("symbol"), q.get("interval")
        if symbol is None:
            raise invalid("symbol", None, "Field required")
        if interval is None:
            raise invalid("interval", None, "Field required")
        start, end = q.get("start"), q.get("end")
        start_ms = None if start is None else _number("start", start, _TIME, 0, _ANY)
        end_ms = None if end is None else _number("end", end, _TIME, 0, _ANY)
        text = q.get("limit")
        limit = (
            DEFAULT_LIMIT if text is None else _number("limit", text, _LIMIT, 1, MAX_CHART_LIMIT)
        )
        series = self.series(symbol, interval)
        aligned("start", start_ms, series.interval)
        aligned("end", end_ms, series.interval)
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            raise ApiError(400, "start", start_ms, f"start={start_ms} is after end={end_ms}")
        return ChartQuery(series, start_ms, end_ms, limit)


def _number(name: str, text: str, adapter: TypeAdapter[int], lowest: int, highest: int) -> int:
    """``text`` as a number: a plain one in ``[lowest, highest]`` directly, anything
    else as ``adapter`` reads it."""
    if len(text) <= 18 and text.isascii() and text.isdigit():
        value = int(text)
        if lowest <= value <= highest:
            return value
    try:
        return adapter.validate_python(text)
    except ValidationError as e:
        raise invalid(name, text, e.errors()[0]["msg"]) from None


def aligned(name: str, value: int | None, interval: Interval) -> int | None:
    if value is not None and not 0 <= value <= MAX_TIME_MS:
        raise ApiError(
            400, name, value, f"{name}={value} is not a time in ms between 0 and {MAX_TIME_MS}"
        )
    if value is not None and not interval.is_aligned(value):
        raise ApiError(
            400,
            name,
            value,
            f"{name}={value} is not a {interval.name} open "
            f"time (nearest: {interval.open_of(value)})",
        )
    return value


def _time_param(name: str, description: str) -> dict[str, Any]:
    schema = {"type": "integer", "maximum": MAX_TIME_MS, "minimum": 0}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {
            "anyOf": [schema, {"type": "null"}],
            "description": description,
            "title": name.title(),
        },
        "description": description,
    }


def chart_parameters() -> list[dict[str, Any]]:
    """/api/klines in the OpenAPI document, as the framework would describe what
    ``Served.chart`` accepts (the symbol and interval schemas become the served lists in
    ``openapi.document``, which edits them: a fresh list each time)."""
    return [
        {
            "name": "symbol",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "title": "Symbol"},
            "description": "e.g. BTCUSDT",
        },
        {
            "name": "interval",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "title": "Interval"},
            "description": "one of the served intervals, e.g. 1m",
        },
        _time_param("start", "first open time (ms, aligned)"),
        _time_param("end", "last open time (ms, aligned)"),
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {
                "type": "integer",
                "maximum": MAX_CHART_LIMIT,
                "minimum": 1,
                "default": DEFAULT_LIMIT,
                "title": "Limit",
            },
        },
    ]
