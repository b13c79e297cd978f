"""The background fetcher's pure rules: which rows of an answer are final, where the
exchange left holes."""

from __future__ import annotations

from livecandle.domain.intervals import INTERVALS
from livecandle.exchange.binance.parse import KlineRow
from livecandle.official.rows import (
    FORMING_GRACE_MS,
    closed_rows,
    find_gaps,
    first_missing,
    opens_between,
)

MIN = 60_000
T0 = 28_333_334 * MIN
ONE_MINUTE = INTERVALS["1m"]


def row(open_ms: int, span_ms: int = MIN) -> KlineRow:
    price = "100.00000000"
    return KlineRow(
        open_ms,
        price,
        price,
        price,
        price,
        "1.00000000",
        open_ms + span_ms - 1,
        "100.00000000",
        1,
        "0.00000000",
        "0.00000000",
    )


def opens(rows: list[KlineRow]) -> list[int]:
    return [r.open_ms for r in rows]


def test_rows_not_closed_by_now_are_never_final() -> None:
    page = [row(T0), row(T0 + MIN), row(T0 + 2 * MIN)]
    now_ms = T0 + 2 * MIN + 30_000  # inside the third candle
    assert opens(closed_rows(page, now_ms, end_ms=T0 + 2 * MIN)) == [T0, T0 + MIN]
    assert opens(closed_rows(page, now_ms, end_ms=None)) == [T0, T0 + MIN]


def test_a_row_is_closed_only_after_its_close_time() -> None:
    page = [row(T0)]
    close_ms = page[0].close_ms
    assert closed_rows(page, close_ms, end_ms=T0) == []
    assert closed_rows(page, close_ms + 1, end_ms=T0) == page


def test_the_last_row_of_an_answer_reaching_now_waits_out_the_grace() -> None:
    page = [row(T0), row(T0 + MIN)]
    just_closed_ms = page[-1].close_ms + 1
    assert opens(closed_rows(page, just_closed_ms, end_ms=None)) == [T0]
    assert opens(closed_rows(page, just_closed_ms, end_ms=just_closed_ms)) == [T0]
    # asked up to an end time in the past: the row is final
    assert opens(closed_rows(page, just_closed_ms, end_ms=T0 + MIN)) == [T0, T0 + MIN]
    settled_ms = page[-1].close_ms + FORMING_GRACE_MS + 1
    assert opens(closed_rows(page, settled_ms, end_ms=None)) == [T0, T0 + MIN]


def test_a_full_page_that_ends_at_now_waits_out_the_grace_too() -> None:
    # 1,000 rows asked from 1,000 minutes ago: the last one just closed by this host's
    # clock, which may be a little ahead of the exchange's (it answered it forming)
    page = [row(T0 + i * MIN) for i in range(1_000)]
    just_closed_ms = page[-1].close_ms + 1_000
    assert opens(closed_rows(page, just_closed_ms, end_ms=None)) == opens(page[:-1])


def test_an_empty_answer_has_no_closed_rows() -> None:
    assert closed_rows([], T0, end_ms=None) == []


def test_consecutive_rows_have_no_gaps() -> None:
    rows = [row(T0 + i * MIN) for i in range(3)]
    assert find_gaps(ONE_MINUTE, T0 - MIN, rows) == []
    assert find_gaps(ONE_MINUTE, None, rows) == []


def test_holes_between_rows_are_gaps_from_the_first_missing_to_the_next_present() -> None:
    rows = [row(T0), row(T0 + 3 * MIN), row(T0 + 4 * MIN), row(T0 + 6 * MIN)]
    assert find_gaps(ONE_MINUTE, None, rows) == [
        (T0 + MIN, T0 + 3 * MIN),
        (T0 + 5 * MIN, T0 + 6 * MIN),
    ]


def test_a_hole_after_the_newest_stored_candle_is_a_gap() -> None:
    rows = [row(T0 + 5 * MIN)]
    assert find_gaps(ONE_MINUTE, T0, rows) == [(T0 + MIN, T0 + 5 * MIN)]


def test_gaps_follow_the_calendar_grid() -> None:
    month = INTERVALS["1M"]
    jan = 1_704_067_200_000  # 2024-01-01
    feb = month.next_open(jan)
    apr = month.next_open(month.next_open(feb))
    assert find_gaps(month, jan, [row(apr, 30 * 86_400_000)]) == [(feb, apr)]


def test_the_first_missing_candle_skips_stored_ones_and_recorded_gaps() -> None:
    present = [T0 + MIN, T0 + 2 * MIN, T0 + 5 * MIN]
    assert first_missing(ONE_MINUTE, T0, T0 + 2 * MIN, present, []) is None
    assert first_missing(ONE_MINUTE, T0, T0 + 5 * MIN, present, []) == T0 + 3 * MIN
    gap = (T0 + 3 * MIN, T0 + 5 * MIN)  # the exchange has no bar there
    assert first_missing(ONE_MINUTE, T0, T0 + 5 * MIN, present, [gap]) is None
    assert first_missing(ONE_MINUTE, T0, T0 + 6 * MIN, present, [gap]) == T0 + 6 * MIN


def test_open_times_are_counted_between_two_times_on_any_grid() -> None:
    assert opens_between(ONE_MINUTE, T0, T0) == 0
    assert opens_between(ONE_MINUTE, T0, T0 + 5 * MIN) == 5  # (T0, T0 + 5 min]
    assert opens_between(ONE_MINUTE, T0 - 1, T0 + 5 * MIN + 59_999) == 6
    month = INTERVALS["1M"]
    jan = 1_704_067_200_000  # 2024-01-01
    dec = 1_733_011_200_000  # 2024-12-01
    assert opens_between(month, jan - 1, dec) == 12
    assert opens_between(month, jan, dec - 1) == 10  # February to October
