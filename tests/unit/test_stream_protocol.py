"""Binance's websocket live-subscription protocol: stream names, requests, frames."""

from __future__ import annotations

import pytest

from livecandle.exchange.binance.stream_protocol import (
    Request,
    RequestError,
    parse_request,
    split_combined,
    valid_stream,
)


@pytest.mark.parametrize(
    "name",
    [
        "btcusdt@aggTrade",
        "btcusdt@trade",
        "btcusdt@kline_1s",
        "btcusdt@kline_1M",
        "btcusdt@kline_1h@+08:00",
        "btcusdt@miniTicker",
        "btcusdt@ticker",
        "btcusdt@ticker_4h",
        "btcusdt@bookTicker",
        "btcusdt@avgPrice",
        "btcusdt@depth",
        "btcusdt@depth@100ms",
        "btcusdt@depth5",
        "btcusdt@depth20@100ms",
        "!miniTicker@arr",
        "!miniTicker@arr@1000ms",
        "!ticker_1d@arr",
    ],
)
def test_binance_stream_names_are_valid(name: str) -> None:
    assert valid_stream(name)


@pytest.mark.parametrize(
    "name",
    [
        "BTCUSDT@aggTrade",  # symbols are lower case
        "btcusdt@kline_7m",
        "btcusdt@depth15",
        "btcusdt@aggtrade",
        "btcusdt",
        "@aggTrade",
        "0",  # ccxt.pro's /ws/<n>
        "btcusdt@aggTrade/ethusdt@aggTrade",
        "!miniTicker",
        "btc usdt@trade",
    ],
)
def test_other_names_are_not(name: str) -> None:
    assert not valid_stream(name)


def test_a_valid_request_is_parsed() -> None:
    req = parse_request('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":"abc1"}')
    assert req == Request("SUBSCRIBE", ["btcusdt@aggTrade"], "abc1")
    assert parse_request('{"method":"LIST_SUBSCRIPTIONS","id":null}').rid is None


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ("{", '{"error":{"code":3,"msg":"Invalid JSON: expected value at line 1 column 2"}}'),
        ('{"id":1}', '{"error":{"code":2,"msg":"Invalid request: missing field `method`"},"id":1}'),
        (
            '{"method":"SUBSCRIBE","params":["x"],"id":7}',
            '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":7}',
        ),
        (
            '{"method":"SUBSCRIBE","params":[],"id":true}',
            '{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}}',
        ),
        (
            '{"method":"SUBSCRIBE","params":[],"id":"' + "a" * 37 + '"}',
            '{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}}',
        ),
        (
            '{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":1}',
            '{"error":{"code":2,"msg":"Invalid request: too many parameters"},"id":1}',
        ),
        (
            '{"method":"SET_PROPERTY","params":["combined"],"id":1}',
            '{"error":{"code":1,"msg":"Invalid value type: expected Boolean"},"id":1}',
        ),
        (
            '{"method":"GET_PROPERTY","params":[5],"id":1}',
            '{"error":{"code":2,"msg":"Invalid request: property name must be a string"},"id":1}',
        ),
    ],
)
def test_bad_requests_get_binance_error_frames(text: str, frame: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_request(text)
    assert e.value.frame == frame


def test_a_combined_frame_gives_its_payload_unchanged() -> None:
    payload = '{"e":"aggTrade","p":"0.00100000","q":"1.0"}'
    assert split_combined(f'{{"stream":"a@aggTrade","data":{payload}}}') == ("a@aggTrade", payload)
    # another layout: still the payload's own bytes (1.0 stays 1.0)
    assert split_combined(f'{{"data": {payload}, "stream": "a@aggTrade"}}') == (
        "a@aggTrade",
        payload,
    )
    assert split_combined('{"result":null,"id":1}') is None
    assert (
        split_combined('{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}')
        is None
    )
