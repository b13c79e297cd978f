"""When the live feed asks the exchange whether its stream lost trades: only while trades
are really missing (the whole market's start must not spend its weight on looks).

No network: the feed gets domain events, and its ``TradeHistory`` is an in-memory one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from livecandle.domain.clock import ManualClock
from livecandle.domain.events import CandleSnapshot, TradeEvent
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SCALE, Candle, Trade
from livecandle.live.feed import LiveFeed

T0 = 1_700_000_100_000
OPEN = INTERVALS["1m"].open_of(T0)


class AskedHistory:
    """The exchange's trades of BTCUSDT in memory, counting the questions."""

    def __init__(self, trades: Sequence[Trade] = ()) -> None:
        self.trades = list(trades)
        self.asked = 0

    async def trades_after(
        self, symbol: str, agg_id: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        self.asked += 1
        return [t for t in self.trades if t.agg_id > agg_id][:limit]

    async def first_trades(
        self, symbol: str, start_ms: int, end_ms: int, limit: int, speculative: bool = False
    ) -> list[Trade]:
        self.asked += 1
        return [t for t in self.trades if start_ms <= t.time_ms <= end_ms][:limit]


def agg(a: int, f: int, event_ms: int) -> TradeEvent:
    """Aggregate trade ``a`` of BTCUSDT (individual trade ``f``), streamed at
    ``event_ms``."""
    return TradeEvent("BTCUSDT", a, 100 * SCALE, SCALE, f, f, event_ms - 5, False, event_ms)


def snapshot(event_ms: int, first: int, last: int, open_ms: int = OPEN) -> CandleSnapshot:
    """BTCUSDT's forming 1m candle as the exchange showed it at ``event_ms``: trades
    ``first``..``last`` (-1: none yet)."""
    candle = Candle.empty(open_ms, open_ms + 59_999, 100 * SCALE)
    return CandleSnapshot(
        "BTCUSDT", "1m", open_ms, open_ms + 59_999, first, last, False, event_ms, candle
    )


def feed(history: AskedHistory) -> LiveFeed:
    return LiveFeed(["BTCUSDT"], [INTERVALS["1m"]], history, ManualClock(T0 + 60_000))


async def settled(f: LiveFeed) -> None:
    await asyncio.wait_for(asyncio.gather(*f._fills), 30)


async def outcome(f: LiveFeed, history: AskedHistory) -> tuple[int, int | None]:
    """Once the looks asked for are done: (how many were asked, BTCUSDT's last trade)."""
    await settled(f)
    return history.asked, f.states["BTCUSDT"].sequencer.last_id


async def test_trades_arriving_after_the_snapshot_that_showed_them_are_not_asked_for() -> None:
    """A snapshot shows trade 20 while our newest is 10; trade 20 itself comes 2.5 s of
    exchange time later (its connection runs late): it was never lost, so nothing is
    asked, though the symbol's stream has gone past the snapshot by more than
    ``BEHIND_MS`` (it went on with those very trades)."""
    history = AskedHistory([agg(2, 20, T0 + 1000).trade()])
    f = feed(history)
    f.handle(agg(1, 10, T0))
    f.handle(snapshot(T0 + 1000, 10, 20))
    f.tick()
    f.handle(agg(2, 20, T0 + 3500))
    f.tick()
    f.handle(snapshot(T0 + 6000, 10, 20))
    f.tick()
    assert await outcome(f, history) == (0, 2)  # (asked, last trade)


async def test_trades_on_a_connection_behind_their_symbols_snapshots_are_waited_for() -> None:
    """The connection carrying BTCUSDT's trades runs 5 s late while its snapshots run
    ahead (on another connection): the snapshots show trade 13 while trades 11, 12
    and 13 still come, one at a time, for 6 s of the snapshots' exchange time. They
    are not lost: nothing is asked."""
    history = AskedHistory([agg(a, 10 + a - 1, T0 + a).trade() for a in range(2, 5)])
    f = feed(history)
    f.handle(agg(1, 10, T0))
    f.handle(snapshot(T0 + 1000, 10, 13))
    for a, snap_ms in ((2, T0 + 3500), (3, T0 + 6000), (4, T0 + 8000)):
        f.handle(agg(a, 10 + a - 1, snap_ms - 5000))
        f.tick()
        f.handle(snapshot(snap_ms, 10, 13))
        f.tick()
    assert await outcome(f, history) == (0, 4)  # (asked, last trade)


async def test_lost_last_trades_are_asked_for_once_the_late_trades_before_them_stop() -> None:
    """Trade 11 still comes late after the snapshot showing 13; 12 and 13 were lost:
    once no trade has come for ``BEHIND_MS`` of the snapshots, they are asked for."""
    history = AskedHistory([agg(a, 10 + a - 1, T0 + a).trade() for a in range(2, 5)])
    f = feed(history)
    f.handle(agg(1, 10, T0))
    f.handle(snapshot(T0 + 1000, 10, 13))
    f.handle(agg(2, 11, T0 + 500))
    f.handle(snapshot(T0 + 3500, 10, 13))
    f.tick()
    await settled(f)
    assert history.asked == 0
    f.handle(snapshot(T0 + 6000, 10, 13))
    f.tick()
    assert await outcome(f, history) == (1, 4)  # (asked, last trade)


async def test_a_symbols_first_trade_after_a_snapshot_made_before_we_subscribed() -> None:
    """At start each kline stream's first snapshot shows the trades of its candle so far,
    made before we subscribed and never ours to receive; a quiet symbol's first trade
    comes seconds later. Its look at the exchange found nothing, for ~350 symbols of the
    whole market, in the first minute."""
    history = AskedHistory()
    f = feed(history)
    f.handle(snapshot(T0 + 1000, 3, 9))
    f.tick()
    f.handle(agg(1, 10, T0 + 5000))
    f.tick()
    await settled(f)
    assert history.asked == 0


async def test_a_newer_snapshot_ahead_once_the_last_ones_trades_came_is_awaited_anew() -> None:
    """Trade 11 came after the snapshot showing it; the next snapshot shows 12, which is
    lost: it is asked for once the stream has gone ``BEHIND_MS`` past that snapshot."""
    history = AskedHistory([agg(3, 12, T0 + 2400).trade()])
    f = feed(history)
    f.handle(agg(1, 10, T0))
    f.handle(snapshot(T0 + 1000, 10, 11))
    f.handle(agg(2, 11, T0 + 1500))
    f.handle(snapshot(T0 + 2500, 10, 12))
    f.handle(snapshot(T0 + 4000, 10, 12))
    f.tick()
    await settled(f)
    assert history.asked == 0  # 1.5 s past the snapshot showing 12: it may still come
    f.handle(snapshot(T0 + 5000, 10, 12))
    f.tick()
    assert await outcome(f, history) == (1, 3)  # (asked, last trade)


@pytest.mark.parametrize(("trades", "asked_after_s"), [(1, 70), (500, 10)])
async def test_a_symbol_without_trades_yet_is_asked_about_after_its_usual_gaps(
    trades: int, asked_after_s: int
) -> None:
    """Before its first trades a symbol's rate is guessed from its snapshot (``trades``
    in the candle's 50 s so far): a rarely traded one silent after the start is asked
    about after the longest quiet time, not after ``silence_s``; a busy one still after
    ``silence_s``."""
    history = AskedHistory()
    f = feed(history)
    assert (f.silence_s, f.quiet_s) == (10, 70)
    f.handle(snapshot(OPEN + 50_000, 100, 100 + trades - 1))
    st = f.states["BTCUSDT"]
    early = int(asked_after_s == 10)
    for silent_s, expected in ((11, early), (71, early + 1)):
        st.heard = time.monotonic() - silent_s
        f.tick()
        await settled(f)
        assert history.asked == expected, silent_s


def test_a_symbol_whose_first_trades_came_before_its_first_snapshot_takes_the_guess() -> None:
    """At start a symbol's first trades come before its kline streams' first snapshots:
    two trades a moment apart tell no usual gap."""
    f = feed(AskedHistory())
    st = f.states["BTCUSDT"]
    f.handle(agg(1, 101, OPEN + 49_000))
    f.handle(agg(2, 102, OPEN + 49_001))
    assert st.quiet_s(f.silence_s, f.quiet_s) == 10
    f.handle(snapshot(OPEN + 50_000, 100, 102))
    assert st.quiet_s(f.silence_s, f.quiet_s) == 70


def test_the_gaps_seen_move_the_guessed_gap() -> None:
    """Once trades come, the symbol's own gaps count: a busy one is soon asked about
    after ``silence_s`` again."""
    f = feed(AskedHistory())
    f.handle(snapshot(OPEN + 50_000, 100, 100))
    st = f.states["BTCUSDT"]
    assert st.quiet_s(f.silence_s, f.quiet_s) == 70
    for a in range(1, 41):  # 40 trades within microseconds
        f.handle(agg(a, 100 + a, OPEN + 51_000))
    assert st.quiet_s(f.silence_s, f.quiet_s) == 10
