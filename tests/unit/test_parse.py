"""Parsers against the real Binance recordings in ../shared/fixtures/binance/."""

from __future__ import annotations

import csv
import itertools
import json

import pytest

from livecandle.domain.model import format_units
from livecandle.exchange.binance import parse
from livecandle.store.codec import to_row
from tests.helpers import SHARED_FIXTURES

pytestmark = pytest.mark.skipif(
    not SHARED_FIXTURES.is_dir(), reason="../shared/fixtures/binance is absent"
)


def test_real_klines_parse_and_store_exactly_as_binance_sent_them() -> None:
    raw = (SHARED_FIXTURES / "http_spot_market_klines.json").read_bytes()
    original = json.loads(raw)
    rows = parse.klines_decoder.decode(raw)
    assert len(rows) == 10
    for row, orig in zip(rows, original, strict=True):
        member = parse.kline_member(row)
        assert json.loads(member) == orig
        assert member == json.dumps(orig, separators=(",", ":")).encode()
        assert to_row(row.candle()) == orig


def test_real_klines_last_row_is_the_forming_one() -> None:
    rows = parse.klines_decoder.decode(
        (SHARED_FIXTURES / "http_spot_market_klines.json").read_bytes()
    )
    assert rows[-1].trades == 7  # vs hundreds in the closed minutes before it
    assert all(r.trades > 300 for r in rows[:-1])
    assert all(b.open_ms - a.open_ms == 60_000 for a, b in itertools.pairwise(rows))


def test_real_agg_trades_parse_to_exact_trades_inside_their_minute() -> None:
    raw = (SHARED_FIXTURES / "spot_market_agg_trades.json").read_bytes()
    trades = [t.trade() for t in parse.agg_trades_decoder.decode(raw)]
    assert len(trades) == 10
    assert all(1634944080000 <= t.time_ms < 1634944140000 for t in trades)
    assert [t.agg_id for t in trades] == list(range(966492862, 966492872))
    assert format_units(trades[0].price) == "60759.60000000"
    assert trades[0].count == 1 and not trades[0].buyer_is_maker
    assert all(t.is_valid for t in trades)


def test_real_archive_csv_rows_have_the_rest_shape() -> None:
    with (SHARED_FIXTURES / "ADABTC-1m-2021-11-27.csv").open() as f:
        lines = list(csv.reader(f))
    assert len(lines) == 10
    for cells in lines:
        row = parse.KlineRow(
            int(cells[0]),
            *cells[1:6],
            int(cells[6]),
            cells[7],
            int(cells[8]),  # type: ignore[arg-type]
            cells[9],
            cells[10],
            cells[11],
        )
        assert to_row(row.candle()) == [
            int(cells[0]),
            *cells[1:6],
            int(cells[6]),
            cells[7],
            int(cells[8]),
            *cells[9:],
        ]


def test_error_body_is_decoded() -> None:
    body = parse.error_decoder.decode(b'{"code":-1121,"msg":"Invalid symbol."}')
    assert (body.code, body.msg) == (-1121, "Invalid symbol.")


def test_stream_events_decode_by_type() -> None:
    dec = parse.msgspec.json.Decoder(parse.StreamEvent)
    agg = dec.decode(
        b'{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100",'
        b'"f":100,"l":105,"T":1672515782136,"m":true,"M":true}'
    )
    assert isinstance(agg, parse.AggTradeEvent) and agg.trade().count == 6
    kl = dec.decode(
        b'{"e":"kline","E":1682244928001,"s":"ETHUSDT","k":{"t":1682244927000,'
        b'"T":1682244927999,"s":"ETHUSDT","i":"1s","f":-1,"L":-1,"o":"1870.76000000",'
        b'"c":"1870.76000000","h":"1870.76000000","l":"1870.76000000","v":"0.00000000",'
        b'"n":0,"x":true,"q":"0.00000000","V":"0.00000000","Q":"0.00000000","B":"0"}}'
    )
    assert isinstance(kl, parse.KlineEvent) and kl.k.x and kl.k.candle().trades == 0
