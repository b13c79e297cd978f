"""The codec: a Candle as Binance's 12-field row and as the live JSON, and back."""

from __future__ import annotations

import msgspec
import pytest

from livecandle.domain.model import Candle
from livecandle.store.codec import (
    closed_value,
    encode_closed,
    encode_live,
    from_live,
    from_row,
    live_row,
    live_value,
    to_live,
    to_row,
)

# BTCUSDT 1m at 2021-10-22 23:03, as Binance's REST answered it
BINANCE_ROW = [
    1634943780000,
    "60685.22000000",
    "60729.84000000",
    "60670.90000000",
    "60719.27000000",
    "21.63272000",
    1634943839999,
    "1313200.01340410",
    617,
    "12.28492000",
    "745719.41022840",
    "0",
]
BINANCE_BYTES = (
    b'[1634943780000,"60685.22000000","60729.84000000","60670.90000000","60719.27000000",'
    b'"21.63272000",1634943839999,"1313200.01340410",617,"12.28492000","745719.41022840","0"]'
)


def test_a_binance_row_round_trips_byte_for_byte() -> None:
    candle = from_row(BINANCE_ROW)
    assert candle.open == 6068522000000
    assert candle.quote_volume == 131320001340410 * 10**8  # 1e-16 units
    assert to_row(candle) == BINANCE_ROW
    assert msgspec.json.encode(to_row(candle)) == BINANCE_BYTES


def test_a_row_without_its_ignored_last_field_still_reads() -> None:
    assert to_row(from_row(BINANCE_ROW[:11])) == BINANCE_ROW


def test_a_short_row_is_refused_with_its_content() -> None:
    with pytest.raises(ValueError, match="kline row has 6 fields, expected 12"):
        from_row(BINANCE_ROW[:6])


def test_quote_volumes_are_rendered_with_8_decimals_rounding_half_to_even() -> None:
    c = Candle(0, 59_999, 1, 1, 1, 1, quote_volume=25 * 10**7, taker_buy_quote_volume=35 * 10**7)
    row = to_row(c)
    assert (row[7], row[10]) == ("0.00000002", "0.00000004")


def test_a_candle_round_trips_through_the_live_json() -> None:
    candle = from_row(BINANCE_ROW)
    fields = msgspec.json.decode(msgspec.json.encode(to_live(candle)))
    assert fields == {
        "time": 1634943780000,
        "close_time": 1634943839999,
        "open": "60685.22000000",
        "high": "60729.84000000",
        "low": "60670.90000000",
        "close": "60719.27000000",
        "volume": "21.63272000",
        "quote_volume": "1313200.01340410",
        "trades": 617,
        "taker_buy_volume": "12.28492000",
        "taker_buy_quote_volume": "745719.41022840",
    }
    assert from_live(fields) == candle
    assert live_row(fields) == BINANCE_ROW


def test_a_live_json_without_volumes_reads_as_zero_volumes_closing_at_its_open() -> None:
    fields = {"time": 60_000, "open": "1.0", "high": "2.0", "low": "1.0", "close": "2.0"}
    assert live_row(fields) == [
        60_000,
        "1.0",
        "2.0",
        "1.0",
        "2.0",
        "0.00000000",
        60_000,
        "0.00000000",
        0,
        "0.00000000",
        "0.00000000",
        "0",
    ]
    assert from_live(fields) == Candle(60_000, 60_000, 10**8, 2 * 10**8, 10**8, 2 * 10**8)


def test_the_live_value_holds_the_forming_candle_and_the_closed_one_unconfirmed() -> None:
    previous = from_row(BINANCE_ROW)
    forming = Candle.empty(1634943840000, 1634943899999, previous.close)
    value = live_value("BTCUSDT", "1m", forming, True, previous, False, 1634943841234)
    assert list(value) == [
        "symbol",
        "interval",
        *to_live(forming),
        "is_incomplete",
        "source",
        "complete",
        "updated_ms",
        "previous",
    ]
    assert value["is_incomplete"] is True and value["source"] == "live"
    assert value["complete"] is True and value["updated_ms"] == 1634943841234
    assert from_live(value) == forming
    assert value["previous"] == closed_value(previous, False)
    assert value["previous"] == {
        **to_live(previous),
        "is_incomplete": False,
        "confirmed": False,
        "source": "live",
        "complete": False,
    }
    assert from_live(value["previous"]) == previous


def test_the_live_value_without_a_closed_candle_has_previous_null() -> None:
    forming = from_row(BINANCE_ROW)
    value = live_value("BTCUSDT", "1m", forming, False, None, False, 0)
    assert value["previous"] is None
    assert msgspec.json.encode(value).endswith(b'"updated_ms":0,"previous":null}')


def test_the_live_value_encoded_with_its_closed_candle_encoded_apart_is_the_same_bytes() -> None:
    previous = from_row(BINANCE_ROW)
    forming = Candle(1634943840000, 1634943899999, 5, 9, 1, 7, 3, 10**9 + 1, 4, 2, 5 * 10**8)
    for prev, complete in ((previous, True), (previous, False), (None, False)):
        raw = None if prev is None else msgspec.Raw(encode_closed(prev, complete))
        expected = msgspec.json.encode(live_value("X", "1m", forming, True, prev, complete, 7))
        assert encode_live("X", "1m", forming, True, raw, 7) == expected
