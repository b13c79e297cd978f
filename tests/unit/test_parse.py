"""The Binance parsers on the project's own payloads (tests/fixtures/, see SOURCES.md there).

Each check also runs, as an extra, on the real recordings in ../shared/fixtures/binance/ when
that folder is present (the ``recorded`` cases); without it they are not collected.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from livecandle.domain.model import format_units
from livecandle.exchange.binance import parse
from livecandle.store.codec import to_row
from tests.helpers import FIXTURES, SHARED_FIXTURES


@dataclass(frozen=True)
class Payloads:
    """One set of Binance payloads: a 1m klines response, the aggTrades of one of its
    minutes, an archive klines CSV and an exchangeInfo response."""

    klines: Path
    agg_trades: Path
    archive_csv: Path
    exchange_info: Path


OWN = Payloads(
    FIXTURES / "klines_SOLUSDT_1m.json",
    FIXTURES / "agg_trades_SOLUSDT.json",
    FIXTURES / "XRPBTC-1m-2022-03-07.csv",
    FIXTURES / "exchange_info.json",
)
RECORDED = Payloads(
    SHARED_FIXTURES / "http_spot_market_klines.json",
    SHARED_FIXTURES / "spot_market_agg_trades.json",
    SHARED_FIXTURES / "ADABTC-1m-2021-11-27.csv",
    SHARED_FIXTURES / "spot_exchange_info_symbols.json",
)
# the recorded cases exist only where ../shared is beside the clone: a stranger's clone
# runs every test it collects, and none is skipped
each_payloads = pytest.mark.parametrize(
    "payloads",
    [
        pytest.param(OWN, id="own"),
        *([pytest.param(RECORDED, id="recorded")] if SHARED_FIXTURES.is_dir() else []),
    ],
)


@each_payloads
def test_klines_decode_exactly_and_are_stored_as_binance_sent_them(payloads: Payloads) -> None:
    raw = payloads.klines.read_bytes()
    original = json.loads(raw)
    rows = parse.klines_decoder.decode(raw)
    assert len(rows) == len(original) == 10
    for row, orig in zip(rows, original, strict=True):
        assert parse.kline_member(row) == json.dumps(orig, separators=(",", ":")).encode()
        assert to_row(row.candle()) == orig
        assert row.ignore == orig[11] == "0"


@each_payloads
def test_the_last_klines_row_is_the_forming_minute(payloads: Payloads) -> None:
    rows = parse.klines_decoder.decode(payloads.klines.read_bytes())
    assert rows[-1].trades < 20  # seconds old, vs hundreds of trades in each closed minute
    assert all(r.trades > 300 for r in rows[:-1])
    assert all(b.open_ms - a.open_ms == 60_000 for a, b in itertools.pairwise(rows))
    assert all(r.close_ms == r.open_ms + 59_999 for r in rows)


@each_payloads
def test_agg_trades_decode_to_exact_trades_inside_one_kline_minute(payloads: Payloads) -> None:
    raw = payloads.agg_trades.read_bytes()
    trades = [t.trade() for t in parse.agg_trades_decoder.decode(raw)]
    assert len(trades) == 10
    for t, orig in zip(trades, json.loads(raw), strict=True):
        assert (t.agg_id, t.first_id, t.last_id, t.time_ms) == (
            orig["a"],
            orig["f"],
            orig["l"],
            orig["T"],
        )
        assert (format_units(t.price), format_units(t.quantity)) == (orig["p"], orig["q"])
        assert t.buyer_is_maker is orig["m"] and t.is_valid
    assert [t.agg_id for t in trades] == list(range(trades[0].agg_id, trades[0].agg_id + 10))
    assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(trades))
    minute = trades[0].time_ms // 60_000 * 60_000
    assert all(minute <= t.time_ms < minute + 60_000 for t in trades)
    [kline] = [
        r for r in parse.klines_decoder.decode(payloads.klines.read_bytes()) if r.open_ms == minute
    ]
    assert sum(t.count for t in trades) <= kline.trades


@each_payloads
def test_archive_csv_rows_have_the_rest_shape(payloads: Payloads) -> None:
    with payloads.archive_csv.open() as f:
        lines = list(csv.reader(f))
    assert len(lines) == 10
    for cells in lines:
        assert len(cells) == 12
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
        stored = json.loads(parse.kline_member(row))
        assert [type(v) for v in stored] == [int, *[str] * 5, int, str, int, str, str, str]
        assert [str(v) for v in stored] == cells
        assert [str(v) for v in to_row(row.candle())] == cells


@each_payloads
def test_exchange_info_decodes_symbols_and_the_weight_limit(payloads: Payloads) -> None:
    raw = payloads.exchange_info.read_bytes()
    orig = json.loads(raw)
    info = parse.exchange_info_decoder.decode(raw)
    assert (info.timezone, info.serverTime) == ("UTC", orig["serverTime"])
    assert [(s.symbol, s.status, s.baseAsset, s.quoteAsset) for s in info.symbols] == [
        (s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) for s in orig["symbols"]
    ]
    assert all(s.status == "TRADING" for s in info.symbols)
    [weight] = [r for r in info.rateLimits if r.rateLimitType == "REQUEST_WEIGHT"]
    assert (weight.interval, weight.intervalNum, weight.limit) == ("MINUTE", 1, 1200)


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
