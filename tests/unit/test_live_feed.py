"""LiveFeed on market events made by hand: ordering, bad input, seeding, missed trades.

No network: the feed gets domain events, and its ``TradeHistory`` is an in-memory one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from itertools import pairwise
from typing import Any

import pytest

from livecandle.domain.clock import ManualClock
from livecandle.domain.events import (
    BadMessage,
    CandleSnapshot,
    MarketEvent,
    ServerShutdown,
    TradeEvent,
    UnknownMessage,
)
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SCALE, Candle, Trade
from livecandle.domain.sequencer import Offer, TradeSequencer
from livecandle.live.feed import LiveFeed

T0 = 1_700_000_100_000
QUOTE = SCALE * SCALE  # one unit of quote volume (1e-16)


class MemoryHistory:
    """An exchange's trade history held in memory (the feed's ``TradeHistory``); with
    ``failure`` set, every question fails with it, as an unreachable exchange would."""

    def __init__(self, trades: Sequence[Trade] = (), failure: Exception | None = None) -> None:
        self.trades = sorted(trades, key=lambda t: t.agg_id)
        self.failure = failure
        self.asked = 0

    async def trades_after(
        self, symbol: str, agg_id: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        self._ask()
        return [t for t in self.trades if t.agg_id > agg_id][:limit]

    async def first_trades(
        self, symbol: str, start_ms: int, end_ms: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        self._ask()
        return [t for t in self.trades if start_ms <= t.time_ms <= end_ms][:limit]

    def _ask(self) -> None:
        self.asked += 1
        if self.failure is not None:
            raise self.failure


def agg(
    a: int, price: int = 100 * SCALE, t: int = T0, f: int | None = None, n: int = 1
) -> TradeEvent:
    """Aggregate trade ``a`` of BTCUSDT: one unit at ``price``, trade ids ``f``.. (n)."""
    f = a * 10 if f is None else f
    return TradeEvent("BTCUSDT", a, price, SCALE, f, f + n - 1, t, False, t)


def feed(history: MemoryHistory | None = None, clock: ManualClock | None = None) -> LiveFeed:
    return LiveFeed(
        ["BTCUSDT"], [INTERVALS["1m"]], history or MemoryHistory(), clock or ManualClock(T0)
    )


def test_malformed_messages_are_counted_and_change_nothing() -> None:
    f = feed()
    f.handle(agg(1))
    f.handle(BadMessage("Expected `object`, got `array`: []"))
    f.handle(BadMessage("aggTrade 2 of BTCUSDT: 'abc' is not a decimal number", "BTCUSDT"))
    st = f.states["BTCUSDT"]
    assert f.bad_messages == 2
    assert f.last_bad == "aggTrade 2 of BTCUSDT: 'abc' is not a decimal number"
    assert st.sequencer.last_id == 1
    forming = st.live.builder.forming(0)
    assert forming is not None and forming.trades == 1


def test_unreadable_messages_of_other_symbols_are_not_ours_to_count() -> None:
    f = feed()
    f.handle(BadMessage("aggTrade 2 of ETHUSDT: 'abc' is not a decimal number", "ETHUSDT"))
    assert f.bad_messages == 0


def test_unknown_events_are_counted_and_a_shutdown_notice_is_no_error() -> None:
    f = feed()
    f.handle(UnknownMessage())
    f.handle(ServerShutdown(1))
    assert f.bad_messages == 0 and f.unknown_events == 1


class EndOfFrames(Exception):
    pass


async def test_consume_hands_each_frame_to_the_decoder_and_its_event_to_the_feed() -> None:
    f = feed()
    events: dict[str, MarketEvent | None] = {"t1": agg(1), "t2": agg(2), "reply": None}

    def decode(frame: str) -> MarketEvent | None:
        if frame == "end":
            raise EndOfFrames
        return events[frame]

    queue: asyncio.Queue[str] = asyncio.Queue()
    for frame in ("t1", "reply", "t2", "end"):
        queue.put_nowait(frame)
    with pytest.raises(EndOfFrames):
        await asyncio.wait_for(f.consume(queue, decode), 5)
    assert f.messages == 4
    assert f.states["BTCUSDT"].sequencer.last_id == 2
    assert f.bad_messages == 0


async def test_a_backlog_is_handled_in_turns_so_other_tasks_run_between() -> None:
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], MemoryHistory(), ManualClock(T0), drain_most=100)
    queue: asyncio.Queue[int] = asyncio.Queue()
    total = 1_000
    for a in range(1, total + 1):  # the whole backlog is there before the consumer runs
        queue.put_nowait(a)
    seen_by_others: list[int] = []
    done = asyncio.Event()

    def decode(a: int) -> MarketEvent | None:
        if a == total:
            done.set()
        return agg(a)

    async def other() -> None:  # e.g. the live writer's flushes
        while not done.is_set():
            seen_by_others.append(f.messages)
            await asyncio.sleep(0)

    others = asyncio.create_task(other())
    consumer = asyncio.create_task(f.consume(queue, decode))
    try:
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, others, return_exceptions=True)
    assert f.states["BTCUSDT"].sequencer.last_id == total  # in order, every one
    # the other task ran while the backlog was handled, at most 100 messages apart
    during = [m for m in seen_by_others if 0 < m < total]
    assert during and max(b - a for a, b in zip([0, *during], [*during, total], strict=True)) <= 100


async def _consumed_beside(
    f: LiveFeed, queue: asyncio.Queue[Any], other: Coroutine[Any, Any, None]
) -> None:
    """``f`` consumes ``queue`` beside ``other`` (e.g. the live writer's flushes) until
    ``other`` ends."""
    others = asyncio.create_task(other)
    consumer = asyncio.create_task(f.consume(queue, lambda e: e))
    try:
        async with asyncio.timeout(5):
            await others
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)


async def test_trades_behind_final_candles_are_handled_before_the_finals() -> None:
    """At 00:00 UTC every series' final kline arrives at once: the trades queued behind
    them (every live price) go first; the finals follow, ``finals_per_turn`` a turn,
    in the order they came."""
    symbols = [f"S{n:03d}USDT" for n in range(50)] + ["BTCUSDT"]
    one_m = INTERVALS["1m"]
    f = LiveFeed(symbols, [one_m], MemoryHistory(), ManualClock(T0), finals_per_turn=20)
    open0 = one_m.open_of(T0)
    f.handle(agg(1, t=open0 + 1_000))
    read: list[str] = []

    def final(symbol: str) -> CandleSnapshot:
        candle = Candle.empty(open0, open0 + 59_999, 100 * SCALE)

        def reading() -> tuple[Candle | None, bytes | None]:
            read.append(symbol)
            return candle, b"row"

        return CandleSnapshot(
            symbol, "1m", open0, open0 + 59_999, -1, -1, True, open0 + 60_001, read=reading
        )

    queue: asyncio.Queue[MarketEvent] = asyncio.Queue()
    for s in symbols[:50]:
        queue.put_nowait(final(s))
    queue.put_nowait(agg(2, t=open0 + 60_010))  # BTCUSDT's first trade of the next minute
    queue.put_nowait(final("BTCUSDT"))
    btc = f.states["BTCUSDT"]
    seen: list[tuple[int, int]] = []  # (finals read, BTCUSDT's newest trade) each turn

    async def other() -> None:  # e.g. the live writer's flushes
        while len(read) < len(symbols):
            seen.append((len(read), btc.sequencer.last_id or 0))
            await asyncio.sleep(0)

    await _consumed_beside(f, queue, other())
    # the trade was in before the first final was read (a turn apart); then 20 a turn
    assert seen[1] == (0, 2) and seen[2] == (20, 2)
    assert all(b - a <= 20 for (a, _), (b, _) in pairwise(seen))
    assert read == symbols
    assert [fc.open_ms for fc in btc.live.finals] == [open0]  # stored as before
    assert [c.candle.open_ms for c in btc.live.closed] == [open0]  # closed by the trade


async def test_at_a_whole_market_close_no_turn_handles_a_backlog_and_many_finals_at_once() -> None:
    """At 00:00 UTC the whole market's finals come with the trades: a turn of the event
    loop that drained 500 messages then read 200 finals held every live price ~120 ms.
    By default a turn handles at most 250 messages, or 100 finals, never both."""
    symbols = ["BTCUSDT"] + [f"S{n:03d}USDT" for n in range(299)]
    one_m = INTERVALS["1m"]
    f = LiveFeed(symbols, [one_m], MemoryHistory(), ManualClock(T0))
    open0 = one_m.open_of(T0)
    candle = Candle.empty(open0, open0 + 59_999, 100 * SCALE)
    queue: asyncio.Queue[MarketEvent] = asyncio.Queue()
    for a in range(1, 601):  # BTCUSDT's trades, and every symbol's final
        queue.put_nowait(agg(a, t=open0 + 1_000))
        if a <= len(symbols):
            queue.put_nowait(
                CandleSnapshot(
                    symbols[a - 1], "1m", open0, open0 + 59_999, -1, -1, True, open0 + 60_001,
                    read=lambda: (candle, b"row"),
                )
            )  # fmt: skip
    total = queue.qsize()
    finals = lambda: sum(len(st.live.finals) for st in f.states.values())  # noqa: E731
    seen: list[tuple[int, int]] = []  # (messages, finals read) each turn of another task

    async def other() -> None:  # e.g. the live writer's flushes
        while finals() < len(symbols):
            seen.append((f.messages, finals()))
            await asyncio.sleep(0)

    await _consumed_beside(f, queue, other())
    assert f.messages == total and finals() == len(symbols)
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in pairwise([*seen, (total, len(symbols))])]
    assert max(m for m, _ in steps) <= 250, steps
    assert max(n for _, n in steps) <= 100, steps
    assert not [s for s in steps if s[0] and s[1]], steps


def test_a_final_handled_after_the_next_periods_trade_compares_the_same_candle() -> None:
    f = feed()
    open0 = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=open0 + 1_000))
    exact = Candle(open0, open0 + 59_999, *[100 * SCALE] * 4, SCALE, 100 * QUOTE, 1)
    f.handle(snapshot(open0, open0 + 1_500, first=10, last=10, candle=exact))
    f.handle(agg(2, t=open0 + 60_010))  # rolls the candle before its final is handled
    st = f.states["BTCUSDT"]
    official = Candle(open0, open0 + 59_999, *[100 * SCALE] * 4, SCALE, 100 * QUOTE, 1)
    f.handle(snapshot(open0, open0 + 60_001, first=10, last=10, candle=official, final=True))
    assert (st.matches, st.mismatches) == (1, 0)
    assert [c.candle for c in st.live.closed] == [official]


def test_duplicates_are_dropped_by_id() -> None:
    f = feed()
    for a in (1, 2, 2, 3, 1):
        f.handle(agg(a))
    st = f.states["BTCUSDT"]
    forming = st.live.builder.forming(0)
    assert forming is not None and forming.trades == 3
    assert st.sequencer.duplicates == 2


def test_sequencer_holds_trades_after_a_gap_until_it_is_filled() -> None:
    s = TradeSequencer()

    def t(a: int) -> Trade:
        return Trade(a, 1, 1, a, a, T0 + a, False)

    assert s.offer(t(1)) is Offer.NEXT
    assert s.offer(t(4)) is Offer.GAP
    assert s.offer(t(5)) is Offer.HELD
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (2, 3)
    out = s.resolve([t(2)])  # a short fetch: 3 still missing
    assert [x.agg_id for x in out] == [2]
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (3, 3)
    out = s.resolve([t(3), t(4)])
    assert [x.agg_id for x in out] == [3, 4, 5]
    assert s.gap is None and s.recovered == 2


def test_a_large_hole_fetched_page_by_page_delivers_each_trade_once_in_order() -> None:
    s = TradeSequencer()

    def t(a: int) -> Trade:
        return Trade(a, 1, 1, a, a, T0 + a, False)

    assert s.offer(t(1)) is Offer.NEXT
    assert s.offer(t(3_001)) is Offer.GAP  # 2..3,000 missed
    for a in (3_003, 3_002, 3_004):  # held, one out of order
        assert s.offer(t(a)) is Offer.HELD
    out: list[int] = []
    out += [x.agg_id for x in s.resolve([t(a) for a in range(1, 1_001)])]  # 1 again
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (1_001, 3_000)
    assert len(s.held) == 4 and s.pool.total == 4  # the held trades wait as they were
    out += [x.agg_id for x in s.resolve([t(a) for a in range(1_001, 2_001)])]
    # a page with a hole of its own: what follows the hole is held with the rest
    out += [x.agg_id for x in s.resolve([t(a) for a in range(2_001, 2_900) if a != 2_500])]
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (2_500, 2_500)
    out += [x.agg_id for x in s.resolve([t(2_500)])]
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (2_900, 3_000)
    out += [x.agg_id for x in s.resolve([t(a) for a in range(2_900, 3_003)])]
    assert out == list(range(2, 3_005))
    assert s.gap is None and s.held == [] and s.pool.total == 0
    assert s.duplicates == 1  # 1, fetched again


def snapshot(
    open_ms: int,
    event_ms: int,
    first: int,
    last: int,
    candle: Candle | None = None,
    final: bool = False,
) -> CandleSnapshot:
    """The exchange's 1m candle of BTCUSDT covering trade ids first..last (default: no
    trades yet, at 100)."""
    if candle is None:
        candle = Candle.empty(open_ms, open_ms + 59_999, 100 * SCALE)
    return CandleSnapshot(
        "BTCUSDT", "1m", open_ms, open_ms + 59_999, first, last, final, event_ms, candle
    )


def test_seed_from_a_snapshot_on_an_agg_trade_boundary() -> None:
    f = feed()
    open_ms = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, 100 * SCALE, T0 + 1000, f=10))
    f.handle(agg(2, 101 * SCALE, T0 + 2000, f=11))
    f.handle(agg(3, 102 * SCALE, T0 + 3000, f=12))
    st = f.states["BTCUSDT"]
    assert not st.live.builder.is_complete(0)
    # the exchange saw 5 earlier trades too; its snapshot ends at trade id 11 (aggTrade 2)
    seen = Candle(
        open_ms,
        open_ms + 59_999,
        open=99 * SCALE,
        high=101 * SCALE,
        low=98 * SCALE,
        close=101 * SCALE,
        volume=7 * SCALE,
        quote_volume=700 * QUOTE,
        trades=9,
        taker_buy_volume=3 * SCALE,
        taker_buy_quote_volume=300 * QUOTE,
    )
    f.handle(snapshot(open_ms, T0 + 2500, first=3, last=11, candle=seen))
    assert st.live.builder.is_complete(0)
    c = st.live.builder.forming(0)
    assert c is not None
    assert (c.open, c.close, c.low, c.trades) == (99 * SCALE, 102 * SCALE, 98 * SCALE, 10)


def test_an_unreadable_snapshot_does_not_seed() -> None:
    f = feed()
    open_ms = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=T0 + 1000, f=10))
    f.handle(CandleSnapshot("BTCUSDT", "1m", open_ms, open_ms + 59_999, 10, 10, False, T0, None))
    assert not f.states["BTCUSDT"].live.builder.is_complete(0)


def test_a_final_snapshot_closes_the_candle_once_its_trades_are_in() -> None:
    f = feed()
    open0 = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=open0 + 1_000))
    closing = snapshot(open0, open0 + 60_100, first=10, last=20, final=True)
    f.handle(closing)  # trade id 20 (aggTrade 2) is not in yet
    st = f.states["BTCUSDT"]
    assert st.live.closed == []
    f.handle(agg(2, t=open0 + 2_000))
    f.handle(closing)
    assert [c.candle.open_ms for c in st.live.closed] == [open0]
    assert st.live.closed[0].candle.trades == 2


@pytest.mark.parametrize(("volume", "matched"), [(SCALE + SCALE // 2, True), (2 * SCALE, False)])
def test_a_closed_candle_is_compared_with_the_exchanges_final_one_as_published(
    volume: int, matched: bool
) -> None:
    f = feed()
    open0 = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=open0 + 1_000))  # trade id 10: 1 at 100
    so_far = [100 * SCALE] * 4 + [SCALE, 100 * QUOTE, 1, SCALE, 100 * QUOTE]
    exact_so_far = Candle(open0, open0 + 59_999, *so_far)
    f.handle(snapshot(open0, open0 + 1_500, first=10, last=10, candle=exact_so_far))
    st = f.states["BTCUSDT"]
    assert st.live.builder.is_complete(0)
    # 0.5 at 100.00000001: a quote of 50.000000005, published at 8 decimals as 50.00000000
    price = 100 * SCALE + 1
    f.handle(TradeEvent("BTCUSDT", 2, price, SCALE // 2, 11, 11, open0 + 2_000, True, open0))
    official = Candle(
        open0,
        open0 + 59_999,
        open=100 * SCALE,
        high=price,
        low=100 * SCALE,
        close=price,
        volume=volume,
        quote_volume=150 * QUOTE,
        trades=2,
        taker_buy_volume=SCALE,
        taker_buy_quote_volume=100 * QUOTE,
    )
    f.handle(snapshot(open0, open0 + 60_100, first=10, last=11, candle=official, final=True))
    assert [c.candle.quote_volume for c in st.live.closed] == [150 * QUOTE + SCALE // 2]
    assert (st.matches, st.mismatches) == ((1, 0) if matched else (0, 1))


def test_a_kline_without_trades_does_not_let_the_clock_close_over_missed_trades() -> None:
    clock = ManualClock(T0)
    f = feed(clock=clock)
    open0 = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=open0 + 30_000))
    # a reconnect later; trades of minutes 1 and 2 never arrived; minute 3 has none yet
    f.handle(snapshot(open0 + 3 * 60_000, open0 + 3 * 60_000 + 10_000, first=-1, last=-1))
    clock.set(open0 + 3 * 60_000 + 15_000)
    f.tick()
    st = f.states["BTCUSDT"]
    assert st.live.closed == []  # nothing closed as "empty and complete" over the unknown minutes
    forming = st.live.builder.forming(0)
    assert forming is not None and forming.open_ms == open0


def test_trades_already_delivered_are_not_held_behind_a_gap_nor_delivered_again() -> None:
    s = TradeSequencer()

    def t(a: int) -> Trade:
        return Trade(a, 1, 1, a, a, T0 + a, False)

    for a in (1, 2, 3):
        assert s.offer(t(a)) is Offer.NEXT
    assert s.offer(t(10)) is Offer.GAP  # 4..9 missed
    # a rotation's overlap (or a late answer to a look) while the hole is open
    assert s.offer(t(2)) is Offer.DUPLICATE
    assert s.offer(t(3)) is Offer.DUPLICATE
    assert s.offer(t(11)) is Offer.HELD
    assert [x.agg_id for x in s.held] == [10, 11] and s.duplicates == 2
    assert [x.agg_id for x in s.abandon()] == [10, 11]  # the hole is given up
    assert s.last_id == 11 and s.gap is None and s.held == []


async def test_an_abandoned_hole_delivers_no_trade_twice() -> None:
    """Trades 2 and 3 come again (a rotation's overlap) while the hole 4..9 waits for a
    fill the exchange cannot answer; the hole is given up: the candle counts each of
    1, 2, 3, 10 and 11 once."""
    history = MemoryHistory(failure=ConnectionError("exchange under maintenance"))
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, ManualClock(T0), fill_give_up_s=0.3)
    for a in (1, 2, 3, 10, 2, 3, 11):
        f.handle(agg(a))
    st = f.states["BTCUSDT"]
    assert st.sequencer.gap is not None
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert st.sequencer.gap is None and st.sequencer.abandoned == 1
    assert st.sequencer.last_id == 11
    forming = st.live.builder.forming(0)
    assert forming is not None and forming.trades == 5
    assert forming.volume == 5 * SCALE


async def test_a_gap_is_filled_from_the_trade_history_in_order() -> None:
    history = MemoryHistory([agg(a).trade() for a in range(1, 8)])
    f = feed(history)
    f.handle(agg(1))
    f.handle(agg(5))  # 2..4 missed: fetched, then 5 is applied after them
    f.handle(agg(6))
    st = f.states["BTCUSDT"]
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert st.sequencer.gap is None and st.sequencer.recovered == 3
    assert st.sequencer.last_id == 6
    forming = st.live.builder.forming(0)
    assert forming is not None and forming.trades == 6


async def test_a_fill_that_keeps_failing_is_abandoned_and_the_symbol_goes_on() -> None:
    history = MemoryHistory(failure=ConnectionError("exchange under maintenance"))
    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, clock, fill_give_up_s=0.3)
    open0 = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, t=open0 + 1_000))
    f.handle(agg(5, t=open0 + 61_000))  # 2..4 missed: a fill starts, and fails
    f.handle(agg(6, t=open0 + 62_000))
    st = f.states["BTCUSDT"]
    assert st.sequencer.gap is not None
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert history.asked >= 1
    assert st.sequencer.gap is None and st.sequencer.abandoned == 1
    assert st.sequencer.last_id == 6  # the held trades went through
    # minute 0 lost trades: it closed incomplete; minute 1 may lack some before 1:01
    assert [(c.candle.open_ms - open0, c.complete) for c in st.live.closed] == [(0, False)]
    assert not st.live.builder.is_complete(0)
    f.handle(agg(7, t=open0 + 63_000))  # and the symbol goes on
    assert st.sequencer.last_id == 7


async def test_a_fill_that_fails_by_a_defect_says_so_and_the_symbol_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not the exchange's failure (those are retried) but one in our own handling of its
    answer: the hole is given up, the error logged, and the symbol is not left frozen
    behind it."""

    class Unreadable:  # an answer the feed cannot apply
        agg_id = 2

    class Broken(MemoryHistory):
        async def trades_after(
            self, symbol: str, agg_id: int, limit: int, speculative: bool = False
        ) -> list[Trade]:
            return [Unreadable()]  # type: ignore[list-item]

    f = feed(Broken())
    f.handle(agg(1))
    f.handle(agg(5))  # 2..4 missed
    st = f.states["BTCUSDT"]
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert "filling missed trades failed" in caplog.text
    assert st.sequencer.gap is None and st.sequencer.abandoned == 1
    f.handle(agg(6))
    assert st.sequencer.last_id == 6
    forming = st.live.builder.forming(0)
    assert forming is not None and forming.trades == 3  # 1, 5 and 6


async def test_a_quiet_symbol_does_not_reconnect_but_lost_trades_do() -> None:
    stalls: list[str] = []

    async def on_stall(symbol: str) -> None:
        stalls.append(symbol)

    for trades, expected in (([], 0), ([agg(2, t=T0 + 1000).trade()], 1)):
        stalls.clear()
        clock = ManualClock(T0)
        f = LiveFeed(
            ["BTCUSDT", "ETHUSDT"],
            [INTERVALS["1m"]],
            MemoryHistory(trades),
            clock,
            silence_s=5,
            on_stall=on_stall,
        )
        f.handle(agg(1))
        st = f.states["BTCUSDT"]
        clock.advance(70_000)
        f.handle(trade_of("ETHUSDT", 69_000))  # the stream goes on for other symbols
        st.heard -= 6  # silent for longer than silence_s (its rate is not known yet)
        f.tick()
        await asyncio.wait_for(asyncio.gather(*f._fills), 30)
        await asyncio.wait_for(asyncio.gather(*f._fills), 30)  # the reconnect, if any
        assert stalls == ["BTCUSDT"] * expected, trades  # its own connection only
        assert st.sequencer.last_id == (1 if expected == 0 else 2)
        f.tick()  # heard again just now: no second check
        assert not f._fills


@pytest.mark.parametrize(("traded_ms", "reconnects"), [(T0 + 500, 1), (T0 - 500, 0)])
async def test_a_silent_symbol_without_trades_reconnects_if_the_exchange_traded_since(
    traded_ms: int, reconnects: int
) -> None:
    stalls: list[int] = []

    async def on_stall(symbol: str) -> None:
        stalls.append(1)

    history = MemoryHistory([agg(9, t=traded_ms).trade()])
    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, clock, silence_s=5, on_stall=on_stall)
    st = f.states["BTCUSDT"]  # added at T0, heard once (a snapshot) and never again
    clock.advance(70_000)
    st.heard = time.monotonic() - f.quiet_s - 1
    f.tick()
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)  # the reconnect, if any
    assert history.asked == 1
    assert len(stalls) == reconnects


async def test_a_busy_symbol_silent_before_its_first_trade_is_a_stall() -> None:
    """Heard once (a snapshot), never a trade, while the exchange trades it every 100 ms:
    its newest trade is always within the second a trade may still be on its way, but
    the ones before, since it was added, were lost: a stall, reconnected, and health
    says so (CI: a stall right after the service started was taken for a quiet market,
    every look doubling the wait)."""
    stalls: list[str] = []

    async def on_stall(symbol: str) -> None:
        stalls.append(symbol)

    history = MemoryHistory([agg(a, t=T0 + 100 * a).trade() for a in range(1, 701)])
    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, clock, silence_s=5, on_stall=on_stall)
    st = f.states["BTCUSDT"]  # added at T0
    clock.advance(70_000)  # the exchange's newest trade: now
    st.heard = time.monotonic() - f.quiet_s - 1
    f.tick()
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)  # the reconnect
    assert history.asked == 1
    assert stalls == ["BTCUSDT"]
    assert st.stalled_since and f.stats()["symbols"]["BTCUSDT"]["stalled_s"] is not None


@pytest.mark.parametrize(("traded_ms", "reconnects"), [(T0 + 500, 1), (T0 - 500, 0)])
async def test_a_symbol_never_heard_from_is_asked_after_the_longest_quiet(
    traded_ms: int, reconnects: int
) -> None:
    """Not one message since it was added (a subscription that did not take is silent
    too): not asked while every candle stream's final kline may still be on its way, asked
    after the longest quiet; trades since it was added mean a stall, none a quiet market."""
    stalls: list[str] = []

    async def on_stall(symbol: str) -> None:
        stalls.append(symbol)

    history = MemoryHistory([agg(9, t=traded_ms).trade()])
    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, clock, silence_s=5, on_stall=on_stall)
    st = f.states["BTCUSDT"]  # added at T0, never heard from
    assert f.stats()["symbols"]["BTCUSDT"]["look_after_s"] == f.quiet_s == 65
    clock.advance(70_000)
    st.added = time.monotonic() - f.quiet_s + 1  # silent for longer than silence_s only
    f.tick()
    assert not f._fills and history.asked == 0
    st.added = time.monotonic() - f.quiet_s - 1
    f.tick()
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)  # the reconnect, if any
    assert history.asked == 1
    assert stalls == ["BTCUSDT"] * reconnects
    f.tick()  # looked at just now: not again
    assert not f._fills and history.asked == 1


@pytest.mark.parametrize("traded", [False, True])
async def test_a_look_the_exchange_could_not_answer_does_not_lengthen_the_next_wait(
    traded: bool,
) -> None:
    """A silent symbol (before its first trade, or after some) is looked at while every
    REST call fails: it cannot tell a quiet market, so the wait before the next look
    stays as it was (a quiet market's doubles: a stall during an outage went unreported
    for ever longer)."""
    history = MemoryHistory(failure=RuntimeError("exchange unreachable"))
    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, clock, silence_s=5)
    st = f.states["BTCUSDT"]
    if traded:
        f.handle(agg(1, t=T0))
    clock.advance(70_000)
    before_s = st.quiet_s(f.silence_s, f.quiet_s)
    for _ in range(3):
        st.heard = time.monotonic() - f.quiet_s - 1
        f.tick()
        await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert history.asked == 3
    assert st.quiet_s(f.silence_s, f.quiet_s) == before_s


def trade_of(symbol: str, a: int) -> TradeEvent:
    return TradeEvent(symbol, a, 100 * SCALE, SCALE, a * 10, a * 10, T0 + a, False, T0 + a)


async def test_held_trades_never_pass_their_bounds_per_symbol_or_in_all() -> None:
    """Every symbol has a hole the exchange cannot fill and trades keep coming: no
    symbol holds more than its cap, all of them together no more than the pool's cap
    (plus the one trade that opens each hole), and each symbol goes on past its hole."""
    symbols = [f"S{n}USDT" for n in range(40)]
    f = LiveFeed(
        symbols,
        [INTERVALS["1m"]],
        MemoryHistory(failure=RuntimeError("exchange unreachable")),
        ManualClock(T0),
        max_held=100,
        max_held_total=1_000,
    )
    for s in symbols:
        f.handle(trade_of(s, 1))
        f.handle(trade_of(s, 10))  # 2..9 missed: a hole, its fill keeps failing
    for a in range(11, 400):
        for s in symbols:
            f.handle(trade_of(s, a))
            held = [len(st.sequencer.held) for st in f.states.values()]
            assert max(held) <= 100
            assert f.held_pool.total == sum(held) <= 1_000 + len(symbols)
    for st in f.states.values():  # each went on: the holes were abandoned
        assert st.sequencer.abandoned >= 1
        assert st.sequencer.last_id is not None and st.sequencer.last_id > 300
        assert st.live.builder.forming(0) is not None
    for s in symbols:
        f.remove_symbol(s)
    assert f.held_pool.total == 0 and not f.live_states()


def test_trades_kept_for_seeding_never_pass_their_bounds() -> None:
    """Before any snapshot every trade is kept for seeding; per symbol at most its cap,
    in all at most the pool's cap plus the newest of each symbol."""
    symbols = [f"S{n}USDT" for n in range(30)]
    f = LiveFeed(
        symbols,
        [INTERVALS["1m"]],
        MemoryHistory(),
        ManualClock(T0),
        recent_trades=50,
        recent_total=600,
    )
    for a in range(1, 200):
        for s in symbols:
            f.handle(trade_of(s, a))
            kept = [len(st.recent) for st in f.states.values()]
            assert max(kept) <= 50
            assert f.recent_pool.total == sum(kept) <= 600 + len(symbols)
    newest = f.states["S0USDT"].recent[-1]
    assert newest.agg_id == 199  # the oldest went, not the newest
    f.remove_symbol("S0USDT")
    assert f.recent_pool.total == sum(len(st.recent) for st in f.states.values())


def test_a_symbol_added_at_run_time_reaches_the_writer_and_a_removed_one_leaves_it() -> None:
    f = feed()
    lives = f.live_states()
    f.add_symbol("ETHUSDT")
    f.handle(TradeEvent("ETHUSDT", 1, 100 * SCALE, SCALE, 1, 1, T0, False, T0))
    assert lives["ETHUSDT"].dirty  # the writer's dict is the feed's own
    assert f.remove_symbol("ETHUSDT") and "ETHUSDT" not in lives
    f.handle(TradeEvent("ETHUSDT", 2, 100 * SCALE, SCALE, 2, 2, T0, False, T0))
    assert "ETHUSDT" not in f.states  # no longer followed: ignored


async def test_a_trade_newer_than_the_messages_handled_is_not_yet_missed() -> None:
    """After a long silence the exchange has a trade newer than anything the feed has
    handled (the consumer is behind): it may be in our queue: applied, no reconnect."""
    stalls: list[int] = []

    async def on_stall(symbol: str) -> None:
        stalls.append(1)

    clock = ManualClock(T0)
    f = LiveFeed(
        ["BTCUSDT"],
        [INTERVALS["1m"]],
        MemoryHistory([agg(2, t=T0 + 30_000).trade()]),
        clock,
        silence_s=5,
        on_stall=on_stall,
    )
    f.handle(agg(1))
    st = f.states["BTCUSDT"]
    clock.advance(70_000)
    st.heard = time.monotonic() - f.quiet_s - 1
    f.tick()
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert stalls == [] and st.sequencer.last_id == 2


async def test_silence_checks_are_speculative_requests() -> None:
    """At market scale thousands of quiet symbols must not crowd out real gap fills:
    the look after a silence is asked as speculative (spare weight only)."""
    asked: list[bool] = []

    class Recording(MemoryHistory):
        async def trades_after(
            self, symbol: str, agg_id: int, limit: int, speculative: bool = False
        ) -> list[Trade]:
            asked.append(speculative)
            return await super().trades_after(symbol, agg_id, limit)

    clock = ManualClock(T0)
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], Recording([]), clock, silence_s=5)
    f.handle(agg(1))
    clock.advance(70_000)
    f.states["BTCUSDT"].heard = time.monotonic() - f.quiet_s - 1
    f.tick()
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert asked == [True]


def test_a_busy_symbol_is_asked_after_silence_s_a_quiet_one_after_its_usual_gaps() -> None:
    f = LiveFeed(["BTCUSDT", "ETHUSDT"], [INTERVALS["1m"]], MemoryHistory([]), ManualClock(T0))
    busy, quiet = f.states["BTCUSDT"], f.states["ETHUSDT"]
    assert f.quiet_s == 70  # silence_s beyond the 1m final's period
    assert busy.quiet_s(10, f.quiet_s) == 10  # rate not known yet: as a busy one
    busy.trade_gap_s, quiet.trade_gap_s = 0.2, 4.0
    assert busy.quiet_s(10, f.quiet_s) == 10
    assert quiet.quiet_s(10, f.quiet_s) == 40
    quiet.trade_gap_s = 30.0
    assert quiet.quiet_s(10, f.quiet_s) == 70


async def test_a_snapshot_ahead_of_our_trades_is_fetched_once_the_stream_has_moved_on() -> None:
    """A snapshot shows trade 20 while our newest is 10 (aggTrade 1): the missing trade
    is asked of the exchange once the symbol's stream has gone 2 s past the snapshot
    (the lost message would have come by then), not while the consumer or the symbol's
    connection is behind (other symbols' messages do not count)."""
    history = MemoryHistory([agg(2, t=T0 + 500, f=20).trade()])
    f = LiveFeed(["BTCUSDT", "ETHUSDT"], [INTERVALS["1m"]], history, ManualClock(T0 + 60_000))
    f.handle(agg(1, t=T0, f=10))
    open_ms = INTERVALS["1m"].open_of(T0)
    f.handle(snapshot(open_ms, T0 + 1000, 10, 20))
    f.tick()
    assert history.asked == 0  # wall time has passed, the stream has not: no question
    f.handle(trade_of("ETHUSDT", 3_500))  # another connection moves on: no question
    f.tick()
    assert history.asked == 0
    f.handle(snapshot(open_ms, T0 + 3500, 10, 20))  # the symbol's own stream moves on
    f.tick()
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert history.asked == 1
    assert f.states["BTCUSDT"].sequencer.last_id == 2


async def test_a_snapshot_ahead_is_looked_at_speculatively_then_urgently() -> None:
    """A late connection looks like a lost message: the first question uses spare
    weight; one still behind after 10 s of the symbol's stream is urgent (a gap fill)."""
    asked: list[bool] = []

    class Recording(MemoryHistory):
        async def trades_after(
            self, symbol: str, agg_id: int, limit: int, speculative: bool = False
        ) -> list[Trade]:
            asked.append(speculative)
            return []  # the exchange has nothing for us yet

    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], Recording([]), ManualClock(T0 + 60_000))
    f.handle(agg(1, t=T0, f=10))
    open_ms = INTERVALS["1m"].open_of(T0)
    f.handle(snapshot(open_ms, T0 + 1000, 10, 20))
    for event_ms in (T0 + 3500, T0 + 12_000):
        f.handle(snapshot(open_ms, event_ms, 10, 20))
        f.tick()
        await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert asked == [True, False]


async def test_a_look_that_finds_nothing_doubles_the_symbols_quiet_time() -> None:
    """Thousands of rarely traded symbols: each look after a silence that finds the
    market quiet doubles the wait before the next, up to the longest."""
    f = LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], MemoryHistory([]), ManualClock(T0), silence_s=5)
    f.handle(agg(1))
    st = f.states["BTCUSDT"]
    waits = []
    for _ in range(5):
        waits.append(st.quiet_s(f.silence_s, f.quiet_s))
        st.heard = time.monotonic() - waits[-1] - 1
        f.tick()
        await asyncio.wait_for(asyncio.gather(*f._fills), 30)
    assert waits == [5, 10, 20, 40, 65]
