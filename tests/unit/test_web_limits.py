"""Bounds of the web layer that need no server: the read cache, the rendering of bad
values in errors, and the settings of the limits."""

from __future__ import annotations

import pytest

from livecandle.config import ConfigError, Settings, parse_intervals
from livecandle.domain.model import SeriesKey
from livecandle.web.candles import ENTRY_OVERHEAD, OfficialCache
from livecandle.web.errors import ApiError, shown
from livecandle.web.params import Served

S = SeriesKey.of("BTCUSDT", "1m")
SERVED = Served(["BTCUSDT"], parse_intervals("1m"))


def test_distinct_empty_answers_are_bounded_by_entries() -> None:
    cache = OfficialCache()
    for i in range(100_000):  # what a minute of distinct future starts brings
        cache.put((S, i * 60_000, None, 1000), b"v1", [])
    assert len(cache) == cache.max_entries == 10_000
    assert cache.size == 10_000 * ENTRY_OVERHEAD


def test_entries_cost_their_overhead_against_the_byte_bound() -> None:
    cache = OfficialCache(max_bytes=10 * ENTRY_OVERHEAD)
    for i in range(100):
        cache.put((S, i, None, 1), b"v1", [])
    assert len(cache) == 10 and cache.size <= cache.max_bytes


def test_the_least_recently_used_entry_goes_first_and_is_then_missing() -> None:
    cache = OfficialCache(max_entries=2)
    rows = [b'[1,"1.00000000"]']
    cache.put(("a",), b"v1", rows)
    cache.put(("b",), b"v1", rows)
    assert cache.get(("a",)) is not None  # a is now the most recent
    cache.put(("c",), b"v1", rows)
    assert cache.get(("b",)) is None and cache.version(("b",)) == b""
    assert cache.get(("a",)) == (rows, b'[1,"1.00000000","official"]')


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("BTCUSDT", "BTCUSDT"),
        ("x" * 100, "x" * 100),
        ("x" * 101, "x" * 100 + "…(101 bytes)"),
        ("é" * 200, "é" * 100 + "…(400 bytes)"),
        (2**63 - 1, 2**63 - 1),
        (10**30, "1" + "0" * 30),
        (10**200, "1" + "0" * 99 + "…(201 bytes)"),
        ([1, 2], [1, 2]),
        (["x" * 200], '["' + "x" * 98 + "…(204 bytes)"),
        (None, None),
        (True, True),
    ],
)
def test_a_bad_value_is_shown_shortened(value: object, expected: object) -> None:
    assert shown(value) == expected


def test_an_integer_too_long_to_print_is_described() -> None:
    assert shown(10**5000) == "<an integer of 16610 bits>"


def test_a_long_parameter_is_named_shortly_in_the_message_and_the_value() -> None:
    for q in (
        {"symbol": "B" * 1_000_000, "interval": "1m"},
        {"symbol": "BTCUSDT", "interval": "m" * 1_000_000},
        {"symbol": "BTCUSDT", "interval": "1m", "limit": "9" * 1_000_000},
    ):
        with pytest.raises(ApiError) as caught:
            SERVED.chart(q)
        e = caught.value
        assert isinstance(e.value, str) and e.value.endswith("…(1000000 bytes)")
        assert len(e.message) < 300 and "…(1000002 bytes)" in e.message, e.message


def test_limit_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "LIVECANDLE_CORS_ORIGINS": "https://a.example, https://b.example",
            "LIVECANDLE_WS_MAX_BYTES": "131072",
            "LIVECANDLE_HEADER_TIMEOUT_S": "5",
            "LIVECANDLE_READ_CACHE_ENTRIES": "500",
        }
    )
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert (s.ws_max_bytes, s.header_timeout_s, s.read_cache_entries) == (131072, 5.0, 500)
    d = Settings.from_env({})
    assert (d.cors_origins, d.ws_max_bytes, d.header_timeout_s, d.read_cache_entries) == (
        (),
        65536,
        10.0,
        10_000,
    )
    with pytest.raises(ConfigError, match="LIVECANDLE_WS_MAX_BYTES"):
        Settings.from_env({"LIVECANDLE_WS_MAX_BYTES": "100"})
