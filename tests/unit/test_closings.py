"""The candle_closed message (store.closings): every candle of a flush in one message,
grouped by interval and open time."""

from __future__ import annotations

import msgspec
import pytest

from livecandle.domain.model import SeriesKey
from livecandle.store.closings import decode_closings, encode_closings

T = 1_700_006_400_000


def test_candles_closing_together_are_one_group_and_decode_to_every_series() -> None:
    closed = [("BTCUSDT", "1m", T), ("ETHUSDT", "1m", T), ("BTCUSDT", "1d", T - 86_340_000)]
    message = encode_closings(closed)
    assert msgspec.json.decode(message) == {
        "closed": [
            {"interval": "1m", "open_ms": T, "symbols": ["BTCUSDT", "ETHUSDT"]},
            {"interval": "1d", "open_ms": T - 86_340_000, "symbols": ["BTCUSDT"]},
        ]
    }
    assert decode_closings(message) == [(SeriesKey.of(s, i), open_ms) for s, i, open_ms in closed]


def test_a_group_of_an_unknown_interval_or_a_bad_symbol_is_left_out() -> None:
    message = msgspec.json.encode(
        {
            "closed": [
                {"interval": "7x", "open_ms": T, "symbols": ["BTCUSDT"]},
                {"interval": "1m", "open_ms": T, "symbols": ["btc usdt", "ETHUSDT"]},
            ]
        }
    )
    assert decode_closings(message) == [(SeriesKey.of("ETHUSDT", "1m"), T)]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"symbol": "BTCUSDT", "interval": "1m", "open_ms": 0}',  # the old one-candle form
        b'{"closed": [{"interval": "1m", "open_ms": "soon", "symbols": []}]}',
    ],
)
def test_anything_else_is_refused_as_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_closings(data)
