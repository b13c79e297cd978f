from __future__ import annotations

import datetime as dt

import pytest

from livecandle.domain.intervals import DAY_MS, INTERVAL_NAMES, INTERVALS, parse_interval


def ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)  # type: ignore[misc]


def test_all_sixteen_binance_intervals_exist() -> None:
    assert INTERVAL_NAMES == (
        "1s",
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "8h",
        "12h",
        "1d",
        "3d",
        "1w",
        "1M",
    )


def test_minute_and_month_are_distinct_case_sensitive_names() -> None:
    assert parse_interval("1m").length_ms == 60_000
    assert parse_interval("1M").length_ms == 0  # calendar months have no fixed length


def test_unknown_interval_error_names_the_value() -> None:
    with pytest.raises(ValueError, match="'7m'"):
        parse_interval("7m")


def test_binance_documented_1m_example() -> None:
    i = INTERVALS["1m"]
    assert i.open_of(1672515782136) == 1672515780000
    assert i.close_of(1672515780000) == 1672515839999


def test_week_opens_monday_as_binance_documented_example() -> None:
    w = INTERVALS["1w"]
    # docs' example row: open 2017-07-03 (Monday), close 2017-07-09 23:59:59.999
    assert w.open_of(ms(2017, 7, 5, 13)) == 1499040000000
    assert w.close_of(1499040000000) == 1499644799999
    for day in range(1, 60):
        open_ms = w.open_of(ms(2024, 1, 1) + day * DAY_MS + 1234)
        assert dt.datetime.fromtimestamp(open_ms / 1000, dt.UTC).weekday() == 0


def test_three_days_on_binance_grid_anchored_at_1970_01_02() -> None:
    d3 = INTERVALS["3d"]
    # real BTCUSDT 3d opens: 2017-08-17, 2018-06-28, 2021-01-01
    for open_ms in (1502928000000, 1530144000000, 1609459200000):
        assert d3.open_of(open_ms) == open_ms
        assert d3.open_of(open_ms + 3 * DAY_MS - 1) == open_ms
    assert d3.next_open(1502928000000) == 1503187200000


def test_month_is_the_calendar_month_from_real_bnbbtc_rows() -> None:
    m = INTERVALS["1M"]
    assert m.open_of(ms(2017, 7, 14, 3)) == 1498867200000
    assert m.close_of(1498867200000) == 1501545599999
    assert m.close_of(1519862400000) == 1522540799999  # March 2018


@pytest.mark.parametrize(
    ("year", "feb_days"), [(2023, 28), (2024, 29), (2000, 29), (1900, 28), (2100, 28)]
)
def test_february_length_in_leap_and_common_years(year: int, feb_days: int) -> None:
    m = INTERVALS["1M"]
    feb = ms(year, 2, 1)
    assert m.next_open(feb) - feb == feb_days * DAY_MS


def test_year_end_rolls_month_week_and_day() -> None:
    last_ms = ms(2023, 12, 31, 23, 59, 59) + 999
    assert INTERVALS["1M"].open_of(last_ms) == ms(2023, 12, 1)
    assert INTERVALS["1M"].next_open(ms(2023, 12, 1)) == ms(2024, 1, 1)
    assert INTERVALS["1d"].next_open(INTERVALS["1d"].open_of(last_ms)) == ms(2024, 1, 1)
    assert INTERVALS["1w"].open_of(last_ms) == ms(2023, 12, 25)
    assert INTERVALS["1s"].open_of(last_ms) == last_ms - 999


def test_leap_day_belongs_to_its_day_and_february() -> None:
    t = ms(2024, 2, 29, 12)
    assert INTERVALS["1d"].open_of(t) == ms(2024, 2, 29)
    assert INTERVALS["1M"].open_of(t) == ms(2024, 2, 1)
    assert INTERVALS["1M"].next_open(ms(2024, 2, 1)) == ms(2024, 3, 1)


@pytest.mark.parametrize("name", INTERVAL_NAMES)
def test_every_interval_tiles_time_without_gaps_or_overlaps(name: str) -> None:
    i = INTERVALS[name]
    o = i.open_of(ms(2023, 12, 20))
    for _ in range(40):
        n = i.next_open(o)
        assert n > o
        assert i.open_of(n - 1) == o
        assert i.open_of(n) == n
        assert i.close_of(o) == n - 1
        assert i.shift(o, 1) == n
        assert i.shift(n, -1) == o
        o = n


@pytest.mark.parametrize("name", INTERVAL_NAMES)
def test_count_between_matches_stepping(name: str) -> None:
    i = INTERVALS[name]
    start = i.open_of(ms(2024, 1, 30))
    end = i.shift(start, 17)
    assert i.count_between(start, end) == 17
    assert i.count_between(end, start) == 0


def test_month_shift_crosses_years_backwards() -> None:
    m = INTERVALS["1M"]
    assert m.shift(ms(2024, 2, 1), -14) == ms(2022, 12, 1)
    assert m.count_between(ms(2022, 12, 1), ms(2024, 2, 1)) == 14


def test_times_before_1970_align_too() -> None:
    assert INTERVALS["1d"].open_of(-1) == -DAY_MS
    assert INTERVALS["1M"].open_of(-1) == ms(1969, 12, 1)
