"""The emulator's history, made a chunk of blocks at a time, is one set of trades: every
kline it answers is the aggregate of the aggTrades it answers, across every tier and
every tier's edge; and its websocket frames are plain RFC 6455 text frames."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from livecandle.domain.intervals import INTERVALS, MINUTE_MS
from livecandle.emulator import wire
from livecandle.emulator.klines import klines
from livecandle.emulator.market import Revealed, SymbolMarket
from livecandle.emulator.outbox import text_frame
from livecandle.emulator.tape import agg_candle
from tests.builders import reference_kline

# 12:01 UTC: the 5-minute tier ends 2 minutes before, at 11:59, inside a 5-minute block
LIVE_MS = 1_764_590_460_000
DAY_MS = 86_400_000


def market(listed_days: int = 60) -> SymbolMarket:
    sm = SymbolMarket(
        "KAZOUSDT",
        7,
        LIVE_MS,
        history_days=listed_days,
        outages_ms=((LIVE_MS - 40 * DAY_MS, LIVE_MS - 39 * DAY_MS - 5 * 3_600_000),),
        clock=Revealed(LIVE_MS + 30_000),
    )
    for t in range(0, 30_000, 41):
        sm.add_trade(LIVE_MS + t)
    return sm


def trades_of(sm: SymbolMarket, open_ms: int, close_ms: int) -> list[Mapping[str, Any]]:
    """The aggTrades the emulator answers for ``[open_ms, close_ms]``, as JSON."""
    inside = []
    for t in sm.trades_from_time(open_ms):
        if t[5] > close_ms:
            break
        inside.append(t)
    out: list[Mapping[str, Any]] = json.loads(wire.agg_trades(inside))
    return out


def check(sm: SymbolMarket, rows: list[list[object]]) -> int:
    checked = 0
    for row in rows:
        open_ms, close_ms = int(str(row[0])), int(str(row[6]))
        if close_ms >= sm.revealed_ms:
            continue
        trades = trades_of(sm, open_ms, close_ms)
        if trades:
            assert row == reference_kline(trades, open_ms, close_ms), row
            checked += 1
        else:
            assert row[8] == 0 and row[1] == row[4] and row[5] == "0.00000000"
    return checked


@pytest.mark.parametrize("interval", ["1s", "1m", "5m", "15m", "1h", "4h", "1d", "1w"])
def test_the_newest_1000_klines_are_the_aggregates_of_their_agg_trades(interval: str) -> None:
    sm = market()
    rows = json.loads(wire.klines_body(klines(sm, INTERVALS[interval], None, None, 1000)))
    assert rows and [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert check(sm, rows) > min(20, len(rows) // 2)


@pytest.mark.parametrize(
    ("interval", "start_ms"),
    [
        ("1m", LIVE_MS - 20 * MINUTE_MS),  # 5-minute blocks, the cut one, 1 s blocks, live
        ("1m", LIVE_MS - DAY_MS - 90 * MINUTE_MS),  # hour blocks into 5-minute ones
        ("1h", LIVE_MS - 31 * DAY_MS),  # day blocks into hour blocks
        ("1h", LIVE_MS - 40 * DAY_MS - 10 * 3_600_000),  # around the exchange outage
        ("1d", LIVE_MS - 59 * DAY_MS),  # from the listing
    ],
)
def test_klines_across_tier_edges_are_the_aggregates_of_their_agg_trades(
    interval: str, start_ms: int
) -> None:
    sm = market()
    rows = json.loads(wire.klines_body(klines(sm, INTERVALS[interval], start_ms, None, 300)))
    assert check(sm, rows) >= 10


def test_a_range_aggregate_equals_its_trades_anywhere() -> None:
    sm = market()
    rng = random.Random(4)
    for _ in range(200):
        a = LIVE_MS - rng.choice([rng.randrange(3 * DAY_MS), rng.randrange(59 * DAY_MS)])
        b = a + rng.randrange(1, rng.choice([2_000, 400_000, 5 * DAY_MS]))
        got = sm.range_agg(a, b)
        trades = trades_of(sm, a, b - 1)
        if not trades:
            assert got is None
            continue
        assert got is not None
        [row] = json.loads(wire.kline_rows([agg_candle(got, a, b - 1)]))
        assert row == reference_kline(trades, a, b - 1)


def test_agg_trade_ids_run_on_without_a_gap_through_the_history() -> None:
    sm = market()
    ids = [t[0] for t in sm.trades_from_id(0)]
    assert ids == list(range(len(ids))) and ids[-1] == sm.last_agg_id


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 200_000])
def test_a_text_frame_reads_back_as_the_message(size: int) -> None:
    text = ("é" * size)[:size].encode()
    client = ClientProtocol(parse_uri("ws://emulator/stream"), state=OPEN, max_size=None)
    client.receive_data(text_frame(text) + text_frame(b"next"))
    assert client.events_received() == [
        Frame(Opcode.TEXT, text, fin=True),
        Frame(Opcode.TEXT, b"next", fin=True),
    ]


def test_the_last_price_before_a_tier_s_end_is_found_not_an_index_error() -> None:
    # a tier's end need not fall on a block boundary: the partial block past its last
    # whole block holds no trade (a 1s klines request there answered 500)
    sm = market()
    for tier in sm.tiers:
        for back_ms in (1, tier.block_ms // 2, tier.block_ms + 1):
            price = sm.last_price_before(tier.end_ms - back_ms)
            assert price is None or price > 0
