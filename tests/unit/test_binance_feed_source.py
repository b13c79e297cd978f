"""Binance combined-stream frames into market events (``exchange/binance/feed_source``).

The frames are shaped like Binance's own (the samples in ``parse.py``'s docstrings)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from livecandle.domain.events import (
    BadMessage,
    CandleSnapshot,
    ServerShutdown,
    TradeEvent,
    UnknownMessage,
)
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SCALE, Candle
from livecandle.exchange.binance import feed_source
from livecandle.exchange.binance.feed_source import decode_frame, streams_for

QUOTE = SCALE * SCALE

AGG_TRADE = {
    "e": "aggTrade",
    "E": 1672515782136,
    "s": "BNBBTC",
    "a": 12345,
    "p": "0.001",
    "q": "100",
    "f": 100,
    "l": 105,
    "T": 1672515782130,
    "m": True,
    "M": True,
}

KLINE = {
    "e": "kline",
    "E": 1672515782136,
    "s": "BNBBTC",
    "k": {
        "t": 1672515780000,
        "T": 1672515839999,
        "s": "BNBBTC",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.0010",
        "c": "0.0020",
        "h": "0.0025",
        "l": "0.0005",  # Binance's documented sample says 0.0015: above its open
        "v": "1000",
        "n": 100,
        "x": False,
        "q": "1.0000",
        "V": "500",
        "Q": "0.500",
        "B": "123456",
    },
}


def combined(stream: str, data: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"stream": stream, "data": data})


def with_kline(**fields: Any) -> dict[str, Any]:
    return {**KLINE, "k": {**KLINE["k"], **fields}}


def test_an_agg_trade_becomes_a_trade_event_in_exact_units() -> None:
    event = decode_frame(combined("bnbbtc@aggTrade", AGG_TRADE))
    assert event == TradeEvent(
        symbol="BNBBTC",
        agg_id=12345,
        price=100_000,  # 0.001
        quantity=100 * SCALE,
        first_id=100,
        last_id=105,
        time_ms=1672515782130,
        buyer_is_maker=True,
        event_ms=1672515782136,
    )
    assert event.trade().count == 6


def test_frames_arrive_as_text_or_bytes() -> None:
    frame = combined("bnbbtc@aggTrade", AGG_TRADE)
    assert decode_frame(frame.decode()) == decode_frame(frame)


def test_a_kline_becomes_a_candle_snapshot() -> None:
    event = decode_frame(combined("bnbbtc@kline_1m", KLINE))
    assert event == CandleSnapshot(
        symbol="BNBBTC",
        interval="1m",
        open_ms=1672515780000,
        close_ms=1672515839999,
        first_trade_id=100,
        last_trade_id=200,
        final=False,
        event_ms=1672515782136,
        candle=Candle(
            open_ms=1672515780000,
            close_ms=1672515839999,
            open=100_000,
            high=250_000,
            low=50_000,
            close=200_000,
            volume=1000 * SCALE,
            quote_volume=1 * QUOTE,
            trades=100,
            taker_buy_volume=500 * SCALE,
            taker_buy_quote_volume=QUOTE // 2,
        ),
    )


def test_a_final_kline_without_trades_is_final_with_no_trade_ids() -> None:
    frame = combined(
        "ethusdt@kline_1s",
        {
            "e": "kline",
            "E": 1682244928001,
            "s": "ETHUSDT",
            "k": {
                "t": 1682244927000,
                "T": 1682244927999,
                "s": "ETHUSDT",
                "i": "1s",
                "f": -1,
                "L": -1,
                "o": "1870.76000000",
                "c": "1870.76000000",
                "h": "1870.76000000",
                "l": "1870.76000000",
                "v": "0.00000000",
                "n": 0,
                "x": True,
                "q": "0.00000000",
                "V": "0.00000000",
                "Q": "0.00000000",
                "B": "0",
            },
        },
    )
    event = decode_frame(frame)
    assert isinstance(event, CandleSnapshot)
    assert event.final and (event.first_trade_id, event.last_trade_id) == (-1, -1)
    assert event.candle == Candle.empty(1682244927000, 1682244927999, 187076 * SCALE // 100)


@pytest.mark.parametrize(
    "fields",
    [{"o": "abc"}, {"v": "1.123456789"}, {"h": "0.0001"}],  # the last: high below low
    ids=["not a decimal", "nine decimals", "high below low"],
)
def test_a_kline_with_unreadable_figures_keeps_its_times_and_ids(fields: dict[str, str]) -> None:
    event = decode_frame(combined("bnbbtc@kline_1m", with_kline(x=True, **fields)))
    assert isinstance(event, CandleSnapshot)
    assert event.candle is None
    assert (event.open_ms, event.close_ms, event.last_trade_id, event.final) == (
        1672515780000,
        1672515839999,
        200,
        True,
    )


@pytest.mark.parametrize("final", [False, True], ids=["forming", "final"])
def test_a_kline_whose_figures_are_not_even_strings_keeps_its_times_and_ids(final: bool) -> None:
    event = decode_frame(combined("bnbbtc@kline_1m", with_kline(x=final, o=5, q=None)))
    assert isinstance(event, CandleSnapshot)
    assert event.candle is None and event.row is None
    assert (event.open_ms, event.last_trade_id, event.final) == (1672515780000, 200, final)


def test_a_forming_klines_candle_is_read_from_its_own_frame_each_time() -> None:
    first = decode_frame(combined("bnbbtc@kline_1m", KLINE))
    second = decode_frame(combined("bnbbtc@kline_1m", with_kline(c="0.0011", n=101, L=201)))
    assert isinstance(first, CandleSnapshot) and isinstance(second, CandleSnapshot)
    assert second.candle is not None and first.candle is not None
    assert (second.candle.close, second.candle.trades) == (110_000, 101)
    assert (first.candle.close, first.candle.trades) == (200_000, 100)
    assert second.last_trade_id == 201


def test_a_server_shutdown_notice_is_its_own_event() -> None:
    frame = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1672515782136}}'
    assert decode_frame(frame) == ServerShutdown(1672515782136)


def test_subscribe_replies_are_no_events() -> None:
    assert decode_frame('{"result":null,"id":1}') is None
    assert decode_frame(b'{"result":["btcusdt@aggTrade"],"id":3}') is None


def test_other_event_types_are_unknown_not_bad() -> None:
    frame = '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}'
    assert decode_frame(frame) == UnknownMessage()


@pytest.mark.parametrize(
    "frame",
    [
        "{",
        "[]",
        b"\xff\xfe",
        '{"stream":"x","data":{"e":"aggTrade","s":"BTCUSDT"}}',  # fields missing
        combined("bnbbtc@aggTrade", {**AGG_TRADE, "a": "12345"}),  # a string id
    ],
    ids=["truncated", "array", "not utf-8", "fields missing", "wrong type"],
)
def test_malformed_frames_become_bad_messages(frame: str | bytes) -> None:
    event = decode_frame(frame)
    assert isinstance(event, BadMessage) and event.symbol is None
    assert event.reason


@pytest.mark.parametrize("price", ["abc", "1.123456789", "-1.0"])
def test_an_agg_trade_with_an_inexact_amount_is_bad_and_names_its_symbol(price: str) -> None:
    event = decode_frame(combined("bnbbtc@aggTrade", {**AGG_TRADE, "p": price}))
    assert isinstance(event, BadMessage)
    assert event.symbol == "BNBBTC" and "aggTrade 12345 of BNBBTC" in event.reason


def test_streams_carry_the_trades_and_a_kline_per_interval_of_each_symbol() -> None:
    intervals = [INTERVALS["1s"], INTERVALS["1h"]]
    assert streams_for(["BTCUSDT", "ETHUSDT"], intervals) == [
        "btcusdt@aggTrade",
        "btcusdt@kline_1s",
        "btcusdt@kline_1h",
        "ethusdt@aggTrade",
        "ethusdt@kline_1s",
        "ethusdt@kline_1h",
    ]


def test_a_final_kline_carries_its_rest_row_built_from_the_streams_own_strings() -> None:
    event = decode_frame(combined("bnbbtc@kline_1m", with_kline(x=True)))
    assert isinstance(event, CandleSnapshot) and event.row is not None
    # the 12 fields of /api/v3/klines, strings untouched (no re-formatting to 8 decimals)
    assert event.row == (
        b'[1672515780000,"0.0010","0.0025","0.0005","0.0020","1000",1672515839999,'
        b'"1.0000",100,"500","0.500","0"]'
    )


def test_only_a_readable_final_kline_carries_a_row() -> None:
    forming = decode_frame(combined("bnbbtc@kline_1m", KLINE))
    unreadable = decode_frame(combined("bnbbtc@kline_1m", with_kline(x=True, o="abc")))
    assert isinstance(forming, CandleSnapshot) and forming.row is None
    assert isinstance(unreadable, CandleSnapshot) and unreadable.row is None


def test_a_final_klines_figures_are_read_once_and_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The feed puts a final aside as it arrives (at 00:00 UTC the whole market's come at
    once, trades behind them): its amounts are read when the feed comes to it."""
    reads: list[object] = []
    real = feed_source._payload_of

    def counted(frame: Any) -> Any:
        reads.append(frame)
        return real(frame)

    monkeypatch.setattr(feed_source, "_payload_of", counted)
    event = decode_frame(combined("bnbbtc@kline_1m", with_kline(x=True)))
    assert isinstance(event, CandleSnapshot) and event.final
    assert (event.open_ms, event.last_trade_id) == (1672515780000, 200) and reads == []
    assert event.row is not None and event.row.startswith(b'[1672515780000,"0.0010",')
    assert event.candle is not None and event.candle.high == 250_000
    assert len(reads) == 1
