"""The local order book: Binance's snapshot + diff algorithm, exact levels, top views."""

from __future__ import annotations

import msgspec
import pytest

from livecandle.exchange.binance.order_book import (
    DepthDiff,
    DepthSnapshot,
    LocalBook,
    Outcome,
    book_ticker_row,
    depth_body,
    parse_combined,
    parse_diff,
    parse_snapshot,
)

U = 100_000_000  # 1.00000000


def diff(
    first: int, last: int, bids: dict[int, int] | None = None, asks: dict[int, int] | None = None
) -> DepthDiff:
    return DepthDiff("BTCUSDT", first, last, list((bids or {}).items()), list((asks or {}).items()))


def snapshot(last_update_id: int) -> DepthSnapshot:
    return DepthSnapshot(last_update_id, [(10 * U, 1 * U), (9 * U, 2 * U)], [(11 * U, 3 * U)])


def test_events_wait_in_the_buffer_until_a_snapshot_arrives() -> None:
    book = LocalBook("BTCUSDT")
    assert book.on_diff(diff(101, 105, {10 * U: 5 * U})) == Outcome.BUFFERED
    assert not book.synced and book.first_buffered_id == 101


def test_a_snapshot_older_than_the_first_buffered_event_is_refused() -> None:
    book = LocalBook("BTCUSDT")
    book.on_diff(diff(101, 105))
    assert book.on_snapshot(snapshot(100)) == Outcome.TOO_OLD
    assert not book.synced
    assert book.on_snapshot(snapshot(103)) == Outcome.SYNCED


def test_buffered_events_the_snapshot_holds_are_dropped_and_the_rest_applied() -> None:
    book = LocalBook("BTCUSDT")
    book.on_diff(diff(95, 99, {10 * U: 7 * U}))  # older than the snapshot: dropped
    book.on_diff(diff(100, 104, {9 * U: 0}))  # straddles 103: applied
    book.on_diff(diff(105, 106, asks={12 * U: 4 * U}))
    assert book.on_snapshot(snapshot(102)) == Outcome.SYNCED
    assert book.update_id == 106
    assert book.bids == {10 * U: 1 * U}  # 9 removed by quantity 0; 10 not overwritten
    assert book.asks == {11 * U: 3 * U, 12 * U: 4 * U}


def test_the_first_event_after_the_snapshot_must_straddle_its_update_id() -> None:
    book = LocalBook("BTCUSDT")
    book.on_diff(diff(90, 95))
    book.on_diff(diff(105, 110))  # 96..104 missed while buffering
    assert book.on_snapshot(snapshot(100)) == Outcome.GAP
    assert not book.synced
    assert book.first_buffered_id == 105  # buffering again from the newest
    assert book.on_snapshot(snapshot(107)) == Outcome.SYNCED
    assert book.update_id == 110


def test_a_stale_event_is_ignored() -> None:
    book = LocalBook("BTCUSDT")
    book.on_snapshot(snapshot(200))
    assert book.on_diff(diff(190, 200, {10 * U: 9 * U})) == Outcome.STALE
    assert book.bids[10 * U] == 1 * U and book.update_id == 200


def test_each_next_event_must_follow_the_last_one_else_the_book_resyncs() -> None:
    book = LocalBook("BTCUSDT")
    book.on_snapshot(snapshot(200))
    assert book.on_diff(diff(201, 203, {8 * U: 1 * U})) == Outcome.APPLIED
    assert book.on_diff(diff(204, 204)) == Outcome.APPLIED
    assert book.on_diff(diff(206, 207)) == Outcome.GAP  # 205 missed
    assert not book.synced and book.bids == {} and book.gaps == 1
    assert book.first_buffered_id == 206
    assert book.on_snapshot(snapshot(206)) == Outcome.SYNCED
    assert book.update_id == 207


def test_a_side_beyond_its_bound_keeps_its_best_levels() -> None:
    book = LocalBook("BTCUSDT", max_levels=10)
    book.on_snapshot(DepthSnapshot(1, [], []))
    book.on_diff(diff(2, 2, {p * U: U for p in range(1, 13)}, {p * U: U for p in range(20, 32)}))
    assert len(book.bids) == 10 and min(book.bids) == 3 * U
    assert len(book.asks) == 10 and max(book.asks) == 29 * U


def test_top_views_and_bodies_are_binance_shaped_and_exact() -> None:
    book = LocalBook("BTCUSDT")
    book.on_snapshot(
        parse_snapshot(
            b'{"lastUpdateId":7,"bids":[["0.00000002","1.5"],["0.00000003","0.1"]],'
            b'"asks":[["60650.01000000","0.61982000"],["60653.68","0.00696"]]}'
        )
    )
    bids, asks = book.top(1)
    assert depth_body(book.update_id, bids, asks) == (
        b'{"lastUpdateId":7,"bids":[["0.00000003","0.10000000"]],'
        b'"asks":[["60650.01000000","0.61982000"]]}'
    )
    best = book.best()
    assert best is not None
    assert book_ticker_row("BTCUSDT", *best) == (
        '{"symbol":"BTCUSDT","bidPrice":"0.00000003","bidQty":"0.10000000",'
        '"askPrice":"60650.01000000","askQty":"0.61982000"}'
    )


def test_a_combined_diff_event_parses_to_exact_levels() -> None:
    raw = (
        b'{"stream":"ethusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000100,'
        b'"s":"ETHUSDT","U":41,"u":43,"b":[["3000.10000000","0.00000000"]],'
        b'"a":[["3000.20000000","12.5"]]}}'
    )
    stream, data = parse_combined(raw)
    assert stream == "ethusdt@depth@100ms"
    event = parse_diff(data)
    assert (event.symbol, event.first_id, event.last_id, event.event_ms) == (
        "ETHUSDT",
        41,
        43,
        1700000000100,
    )
    assert event.bids == [(300_010_000_000, 0)] and event.asks == [(300_020_000_000, 1_250_000_000)]


def test_an_unsynced_book_has_no_best_prices() -> None:
    book = LocalBook("BTCUSDT")
    assert book.best() is None
    with pytest.raises(msgspec.ValidationError):
        parse_diff(b'{"e":"depthUpdate"}')
