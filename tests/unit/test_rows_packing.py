"""A klines page packed for the store in one piece (``packed_rows``, ``find_gaps``'s run
of consecutive rows) gives exactly what the row-at-a-time definitions give."""

from __future__ import annotations

import random

import msgspec

from livecandle.domain.intervals import INTERVALS, Interval
from livecandle.exchange.binance.parse import KlineRow, kline_member, kline_members, klines_decoder
from livecandle.official.rows import find_gaps, packed_rows
from livecandle.store.store import PackedRows, pack_rows

MIN = 60_000
T0 = 28_333_334 * MIN


def amount(rnd: random.Random) -> str:
    return f"{rnd.randrange(10**9)}.{rnd.randrange(10**8):08d}"


def random_rows(
    rnd: random.Random, n: int, start_ms: int = T0, step_ms: int = MIN
) -> list[KlineRow]:
    return [
        KlineRow(
            start_ms + i * step_ms,
            amount(rnd),
            amount(rnd),
            amount(rnd),
            amount(rnd),
            amount(rnd),
            start_ms + (i + 1) * step_ms - 1,
            amount(rnd),
            rnd.randrange(10**6),
            amount(rnd),
            amount(rnd),
            rnd.choice(["0", "1"]),
        )
        for i in range(n)
    ]


def one_at_a_time(rows: list[KlineRow]) -> PackedRows:
    """The store's packing of ``(open_ms, kline_member)`` pairs: the definition."""
    return pack_rows([(r.open_ms, kline_member(r)) for r in rows])


def test_a_page_packs_to_the_members_and_open_times_of_its_rows_one_at_a_time() -> None:
    rnd = random.Random(9)
    for n in (0, 1, 2, 999, 1000):
        rows = random_rows(rnd, n)
        assert packed_rows(rows) == one_at_a_time(rows)


def test_a_decoded_answer_is_stored_as_the_exchange_sent_its_rows() -> None:
    rows = random_rows(random.Random(1), 1000)
    sent = [msgspec.json.encode(list(msgspec.structs.astuple(r))) for r in rows]
    packed = packed_rows(klines_decoder.decode(b"[" + b",".join(sent) + b"]"))
    assert packed.members == b"".join(row + b"\n" for row in sent)
    assert packed.opens == " ".join(str(r.open_ms) for r in rows).encode()


def test_strings_a_json_encoder_escapes_pack_unchanged() -> None:
    odd = ["],[", '"],["', "a\nb", "back\\slash", "\u00e9\u4e2d", "]", "[", ",", "\x01"]
    rnd = random.Random(2)
    for s in odd:
        rows = random_rows(rnd, 5)
        rows[2] = msgspec.structs.replace(rows[2], high=s)
        rows[4] = msgspec.structs.replace(rows[4], taker_buy_quote_volume=s)
        assert kline_members(rows) == b"".join(kline_member(r) + b"\n" for r in rows)
        assert packed_rows(rows) == one_at_a_time(rows)


def gaps_row_by_row(
    interval: Interval, prev_open_ms: int | None, rows: list[KlineRow]
) -> list[tuple[int, int]]:
    """``find_gaps``' definition: a row opening after the candle following the previous
    one leaves a gap."""
    gaps = []
    for r in rows:
        if prev_open_ms is not None:
            expected_ms = interval.next_open(prev_open_ms)
            if r.open_ms > expected_ms:
                gaps.append((expected_ms, r.open_ms))
        prev_open_ms = r.open_ms
    return gaps


def test_gaps_of_random_pages_are_those_of_the_row_by_row_definition() -> None:
    rnd = random.Random(3)
    for _ in range(3000):
        interval = INTERVALS[rnd.choice(["1m", "1h", "3d", "1w", "1M"])]
        step_ms = interval.nominal_ms
        start_ms = interval.open_of(T0) + rnd.choice([0, 0, 0, 1, -1, step_ms // 2])
        rows = random_rows(rnd, rnd.randrange(0, 8), start_ms, step_ms)
        if rows and rnd.random() < 0.3:  # a hole, a repeat or an off-grid row
            i = rnd.randrange(len(rows))
            shift_ms = rnd.choice([step_ms, -step_ms, 1, 2 * step_ms])
            rows = rows[:i] + [
                msgspec.structs.replace(r, open_ms=r.open_ms + shift_ms) for r in rows[i:]
            ]
        prev_open_ms = rnd.choice(
            [None, start_ms - step_ms, start_ms - 2 * step_ms, start_ms, start_ms - 1]
        )
        assert find_gaps(interval, prev_open_ms, rows) == gaps_row_by_row(
            interval, prev_open_ms, rows
        ), (interval, prev_open_ms, [r.open_ms for r in rows])


def test_a_full_page_of_consecutive_rows_after_the_stored_one_has_no_gap() -> None:
    rows = random_rows(random.Random(4), 1000)
    assert find_gaps(INTERVALS["1m"], T0 - MIN, rows) == []
    assert find_gaps(INTERVALS["1m"], T0 - 2 * MIN, rows) == [(T0 - MIN, T0)]
