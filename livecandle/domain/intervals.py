"""Binance kline intervals and their exact UTC alignment.

All times are int milliseconds since the Unix epoch, UTC. A candle covers
``[open_ms, next_open(open_ms))``; Binance's close time is ``next_open - 1``.

Alignment, as Binance does it:
- fixed intervals up to ``1d`` open on multiples of their length from 1970-01-01;
- ``3d`` opens on a 3-day grid anchored at 1970-01-02 (``open % 3d == 1d``);
- ``1w`` opens on Monday 00:00 (1970-01-05 was a Monday);
- ``1M`` opens on the 1st of each calendar month.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS

_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return y + (m <= 2), m, d


def month_start_ms(year: int, month: int) -> int:
    """Open time of the calendar month ``year-month`` (month 1..12, may overflow by one)."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return _days_from_civil(year, month, 1) * DAY_MS


@dataclass(frozen=True, slots=True)
class Interval:
    """One Binance kline interval. ``length_ms`` is 0 for the calendar month."""

    name: str
    length_ms: int
    anchor_ms: int = 0

    @property
    def nominal_ms(self) -> int:
        """Length for sizing (TTLs, budgets); 30 days for ``1M``."""
        return self.length_ms or 30 * DAY_MS

    def open_of(self, ts_ms: int) -> int:
        """Open time of the candle containing ``ts_ms``."""
        if self.length_ms:
            return ts_ms - (ts_ms - self.anchor_ms) % self.length_ms
        year, month, _ = _civil_from_days(ts_ms // DAY_MS)
        return month_start_ms(year, month)

    def next_open(self, open_ms: int) -> int:
        """Open time of the candle after the one containing ``open_ms``."""
        if self.length_ms:
            return self.open_of(open_ms) + self.length_ms
        year, month, _ = _civil_from_days(open_ms // DAY_MS)
        return month_start_ms(year, month + 1)

    def close_of(self, open_ms: int) -> int:
        """Binance close time of the candle opening at ``open_ms``."""
        return self.next_open(open_ms) - 1

    def shift(self, open_ms: int, n: int) -> int:
        """Open time ``n`` candles after (n > 0) or before (n < 0) ``open_ms``."""
        if self.length_ms:
            return self.open_of(open_ms) + n * self.length_ms
        year, month, _ = _civil_from_days(open_ms // DAY_MS)
        return month_start_ms(year, month + n)

    def is_aligned(self, ts_ms: int) -> bool:
        return self.open_of(ts_ms) == ts_ms

    def count_between(self, start_open_ms: int, end_open_ms: int) -> int:
        """Number of candle opens in ``[start_open_ms, end_open_ms)`` (both aligned)."""
        if end_open_ms <= start_open_ms:
            return 0
        if self.length_ms:
            return (end_open_ms - start_open_ms) // self.length_ms
        y0, m0, _ = _civil_from_days(start_open_ms // DAY_MS)
        y1, m1, _ = _civil_from_days(end_open_ms // DAY_MS)
        return (y1 - y0) * 12 + (m1 - m0)

    def __str__(self) -> str:
        return self.name


def _fixed(name: str, length_ms: int, anchor_ms: int = 0) -> Interval:
    return Interval(name, length_ms, anchor_ms)


INTERVALS: Final[dict[str, Interval]] = {
    i.name: i
    for i in (
        _fixed("1s", SECOND_MS),
        _fixed("1m", MINUTE_MS),
        _fixed("3m", 3 * MINUTE_MS),
        _fixed("5m", 5 * MINUTE_MS),
        _fixed("15m", 15 * MINUTE_MS),
        _fixed("30m", 30 * MINUTE_MS),
        _fixed("1h", HOUR_MS),
        _fixed("2h", 2 * HOUR_MS),
        _fixed("4h", 4 * HOUR_MS),
        _fixed("6h", 6 * HOUR_MS),
        _fixed("8h", 8 * HOUR_MS),
        _fixed("12h", 12 * HOUR_MS),
        _fixed("1d", DAY_MS),
        _fixed("3d", 3 * DAY_MS, anchor_ms=DAY_MS),
        _fixed("1w", WEEK_MS, anchor_ms=4 * DAY_MS),
        Interval("1M", 0),
    )
}

INTERVAL_NAMES: Final = tuple(INTERVALS)


def parse_interval(name: str) -> Interval:
    """The interval called ``name`` (case-sensitive, as Binance: ``1m`` minute, ``1M`` month)."""
    try:
        return INTERVALS[name]
    except KeyError:
        raise ValueError(
            f"interval {name!r} is not a Binance interval (one of {', '.join(INTERVAL_NAMES)})"
        ) from None
