"""The one validator of /api/klines queries (the fast path and the route both use it)."""

from __future__ import annotations

import pytest

from livecandle.domain.intervals import parse_interval
from livecandle.domain.model import SeriesKey
from livecandle.web.errors import ApiError
from livecandle.web.params import MAX_TIME_MS, ChartQuery, Served

MIN = 60_000
T0 = 1_700_000_040_000  # a minute boundary
SERVED = Served(["BTCUSDT", "ETHUSDT"], [parse_interval("1m"), parse_interval("1h")])
Q = {"symbol": "BTCUSDT", "interval": "1m"}


def test_a_plain_query_gets_the_default_limit() -> None:
    assert SERVED.chart(Q) == ChartQuery(SeriesKey.of("BTCUSDT", "1m"), None, None, 1000)


def test_times_and_limit_are_read_as_numbers() -> None:
    query = SERVED.chart({**Q, "start": str(T0), "end": str(T0 + MIN), "limit": "7"})
    assert (query.start_ms, query.end_ms, query.limit) == (T0, T0 + MIN, 7)


@pytest.mark.parametrize(("text", "value"), [("+5", 5), (" 5", 5), ("5.0", 5), ("1_0", 10)])
def test_numbers_read_as_the_framework_reads_them(text: str, value: int) -> None:
    assert SERVED.chart({**Q, "limit": text}).limit == value


def test_unknown_parameters_are_ignored() -> None:
    assert SERVED.chart({**Q, "x": "1"}) == SERVED.chart(Q)


@pytest.mark.parametrize(
    ("change", "field", "value", "words"),
    [
        ({"symbol": None}, "symbol", None, "Field required"),
        ({"interval": None}, "interval", None, "Field required"),
        ({"symbol": ""}, "symbol", "", "required"),
        ({"symbol": "DOGEUSDT"}, "symbol", "DOGEUSDT", "not served"),
        ({"interval": "7m"}, "interval", "7m", "not a Binance interval"),
        ({"interval": "5m"}, "interval", "5m", "not served"),
        ({"limit": "abc"}, "limit", "abc", "valid integer"),
        ({"limit": "0"}, "limit", "0", "greater than or equal to 1"),
        ({"limit": "5001"}, "limit", "5001", "less than or equal to 5000"),
        ({"start": "-5"}, "start", "-5", "greater than or equal to 0"),
        ({"start": "1.5"}, "start", "1.5", "valid integer"),
        ({"start": str(T0 + 5)}, "start", T0 + 5, "not a 1m open time"),
        ({"end": str(MAX_TIME_MS + 1)}, "end", MAX_TIME_MS + 1, "not a time in ms"),
        ({"end": "9" * 30}, "end", "9" * 30, "less than or equal to"),
        ({"start": str(T0 + MIN), "end": str(T0)}, "start", T0 + MIN, "after end"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_field_and_the_value(
    change: dict[str, str | None], field: str, value: object, words: str
) -> None:
    q = {k: v for k, v in {**Q, **change}.items() if v is not None}
    with pytest.raises(ApiError) as caught:
        SERVED.chart(q)
    e = caught.value
    assert (e.status, e.field, e.value) == (400, field, value)
    assert words in e.message and field in e.message
