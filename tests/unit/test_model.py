from __future__ import annotations

import re

import pytest

from livecandle.domain.model import (
    SCALE,
    Candle,
    DecimalError,
    SeriesKey,
    format_quote,
    format_units,
    quote_to_units,
    to_units,
)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("60759.60000000", 6075960000000),
        ("0.00002853", 2853),
        ("1", 100000000),
        ("0.1", 10000000),
        ("12.", 1200000000),
        ("0.000000010", 1),
        ("0", 0),
    ],
)
def test_decimal_text_to_exact_units(text: str, units: int) -> None:
    assert to_units(text) == units


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "-1",
        "1e5",
        "0.000000001",
        "1.2.3",
        " 1",
        "+1.00000000",
        "1_0.00000000",
        "\u0661\u0662.00000000",
    ],  # the last: Arabic-Indic digits
)
def test_bad_decimal_text_is_refused_with_the_value(text: str) -> None:
    with pytest.raises(DecimalError, match=re.escape(repr(text))):
        to_units(text)


def test_format_round_trips_binance_eight_decimals() -> None:
    for text in ("60759.60000000", "0.00000001", "1313200.01340410", "0.00000000"):
        assert format_units(to_units(text)) == text


def test_quote_volume_is_exact_then_rounded_half_even_at_8dp() -> None:
    # 0.01 tick x 0.00001 step: exact at 8 decimals, nothing rounds
    assert format_quote(to_units("60759.60") * to_units("0.00841")) == "510.98823600"
    assert format_quote(5 * 10**7) == "0.00000000"  # 0.5e-8 -> even (0)
    assert format_quote(15 * 10**7) == "0.00000002"  # 1.5e-8 -> even (2)
    assert quote_to_units("1.5") == 15 * 10**15


def test_candle_refuses_high_below_close() -> None:
    with pytest.raises(ValueError, match="low <= open, close <= high"):
        Candle(0, 59_999, open=10, high=11, low=9, close=12)


def test_series_key_text_form() -> None:
    key = SeriesKey.of("BTCUSDT", "1m")
    assert str(key) == "BTCUSDT:1m"
    assert SeriesKey.parse("BTCUSDT:1m") == key
    with pytest.raises(ValueError, match="'btc'"):
        SeriesKey.of("btc", "1m")


def test_amounts_format_with_8_decimals_at_every_width() -> None:
    for units in (0, 1, 99_999_999, 100_000_000, 6075960000000, 10**30 + 7, -1, -150_000_000):
        whole, frac = divmod(abs(units), SCALE)
        sign = "-" if units < 0 else ""
        assert format_units(units) == f"{sign}{whole}.{frac:08d}"
        assert units < 0 or to_units(format_units(units)) == units
