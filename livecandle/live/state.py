"""SymbolState: what the live feed knows about one symbol.

Its trade order (``TradeSequencer``), the recent trades kept to seed from a snapshot,
how far the exchange's trades are known to be in, and the ``SymbolLive`` the writer reads.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from livecandle.domain.events import CandleSnapshot
from livecandle.domain.model import Trade
from livecandle.domain.sequencer import TradePool, TradeSequencer
from livecandle.live.writer import SymbolLive

# Replay buffer for seeding from candle snapshots, kept only until every interval is
# seeded. A snapshot comes every second or two, so a few thousand trades cover the
# busiest symbol; the total bounds a start with every symbol of the market at once.
RECENT_TRADES = 10_000  # per symbol
RECENT_TRADES_TOTAL = 400_000  # across the symbols of a feed (plus one per symbol)


@dataclass(slots=True)  # read ten times a second for each symbol of the market (tick)
class SymbolState:
    """The feed's state of one symbol; ``live`` is the part the writer reads."""

    live: SymbolLive
    sequencer: TradeSequencer = field(default_factory=TradeSequencer)
    recent: deque[Trade] = field(default_factory=deque)
    recent_cap: int = RECENT_TRADES
    recent_pool: TradePool = field(default_factory=lambda: TradePool(RECENT_TRADES_TOTAL))
    filling: bool = False  # a task fetches the missed trades of the current hole
    last_trade_id: int = -1  # last individual trade id of the newest trade
    pending_seeds: dict[int, CandleSnapshot] = field(default_factory=dict)
    matches: int = 0
    mismatches: int = 0
    heard: float = 0.0  # monotonic time of the newest message about this symbol
    streamed: float = 0.0  # the same, never moved by a silence check (for health)
    # a silence the exchange showed to be a stall (it had trades the stream did not
    # deliver), since then; a quiet market is no stall (0.0)
    stalled_since: float = 0.0
    # exchange time up to which every trade is known to be in: candles ending before it
    # may be closed by the clock
    safe_ms: int = 0
    behind_ms: int = 0  # exchange time of a snapshot that showed trades we lack
    behind_first_ms: int = 0  # ... the first of them, while we still lack them
    behind_id: int = -1  # ... the newest (individual) trade id that snapshot showed
    behind_had_id: int = -1  # ... and ours then (or at the last look at it)
    stream_ms: int = 0  # exchange time of the newest message about this symbol handled
    checking_silence: bool = False  # asking the exchange whether a silence lost trades
    since_ms: int = 0  # exchange time the symbol was added
    added: float = 0.0  # ... and monotonic time (silent since, until first heard from)
    # moving average of the seconds between trades (0.0: none seen yet), so that a
    # busy symbol's silence is noticed in seconds and a rarely traded one costs nothing
    trade_gap_s: float = 0.0
    last_trade_mono: float = 0.0
    guessed_span_ms: int = 0  # the candle span trade_gap_s was last guessed from
    index: dict[str, int] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return self.live.symbol

    def heard_from_stream(self) -> None:
        """A message about this symbol arrived: it is neither silent nor stalled."""
        self.heard = self.streamed = time.monotonic()
        self.stalled_since = 0.0

    def traded(self) -> None:
        """A trade arrived: heard from the stream (``heard_from_stream``, inlined: this
        runs for every trade of the market), and the gap average moves."""
        now = self.heard = self.streamed = time.monotonic()
        self.stalled_since = 0.0
        if self.last_trade_mono:
            self.trade_gap_s += (now - self.last_trade_mono - self.trade_gap_s) * 0.1
        self.last_trade_mono = now

    def guess_gap(self, span_ms: int, trades: int) -> None:
        """The symbol's usual gap between trades as a candle snapshot tells it
        (``trades`` individual trades in the ``span_ms`` since its candle opened;
        aggregate trades are as many at most, so the guess is never longer than the
        real gap), for the average of the gaps seen to start from: started from
        nothing, it made a rarely traded symbol's first silences look long (its first
        trades come before its first snapshots), and the whole market's start asked
        about hundreds of them in its first minute, finding nothing. The gaps seen
        then move it as before."""
        self.guessed_span_ms = span_ms
        guess_s = span_ms / 1000 / max(trades, 1)
        if guess_s > self.trade_gap_s:
            self.trade_gap_s = guess_s

    def quiet_s(self, silence_s: float, longest_s: float) -> float:
        """How long this symbol may be silent before the exchange is asked whether its
        stream lost trades: ``silence_s`` for a busy symbol (or one whose rate is not
        known yet), ten of its usual gaps between trades for a quieter one, at most
        ``longest_s``. A look that found nothing doubles it (``found_quiet``)."""
        if not self.trade_gap_s:
            return silence_s
        return min(longest_s, max(silence_s, 10 * self.trade_gap_s))

    def found_quiet(self, silence_s: float, longest_s: float) -> None:
        """The exchange had nothing after a silence: a quiet market. Wait twice as long
        before the next look (the usual gap moves back down as trades come)."""
        self.trade_gap_s = min(longest_s, 2 * self.quiet_s(silence_s, longest_s)) / 10

    def remember(self, trade: Trade) -> None:
        """Keep ``trade`` for seeding: the oldest goes when this symbol has
        ``recent_cap`` or the pool is full (a symbol keeps at least its newest)."""
        recent, pool = self.recent, self.recent_pool
        if recent and (len(recent) >= self.recent_cap or pool.full):
            recent.popleft()
        else:
            pool.total += 1
        recent.append(trade)

    def forget_recent(self) -> None:
        self.recent_pool.total -= len(self.recent)
        self.recent.clear()

    @property
    def needs_seed(self) -> bool:
        return not self.live.builder.all_complete

    def trades_after(self, last_id: int, open_ms: int) -> list[Trade] | None:
        """The trades processed after a snapshot covering trades up to ``last_id``;
        None when that cannot be known exactly (the snapshot split an aggregate trade, or
        trades between it and our first one were never seen)."""
        if last_id < 0:  # the snapshot had no trade yet in its candle
            return [t for t in self.recent if t.time_ms >= open_ms]
        out: list[Trade] = []
        found = False
        for t in self.recent:
            if t.first_id > last_id:
                out.append(t)
            elif t.last_id == last_id:
                found = True
            elif t.last_id > last_id:
                return None
        if found or (out and out[0].first_id == last_id + 1):
            return out
        return None

    def stats(self, silence_s: float, longest_s: float) -> dict[str, Any]:
        """``silence_s``, ``longest_s``: the feed's, for ``look_after_s`` (``quiet_s``: how
        long this symbol may be silent before the exchange is asked, the soonest its
        stall can be reported)."""
        return {
            "look_after_s": round(
                self.quiet_s(silence_s, longest_s) if self.heard else longest_s, 3
            ),
            "last_agg_id": self.sequencer.last_id,
            "gaps": self.sequencer.gaps,
            "recovered": self.sequencer.recovered,
            "duplicates": self.sequencer.duplicates,
            "filling": self.sequencer.gap is not None,
            "late_trades": self.live.builder.late_trades,
            "stale_trades": self.live.builder.stale_trades,
            "matches": self.matches,
            "mismatches": self.mismatches,
            "seeded": not self.needs_seed,
            "silent_s": round(time.monotonic() - self.heard, 3) if self.heard else None,
            "stream_silent_s": (
                round(time.monotonic() - self.streamed, 3) if self.streamed else None
            ),
            "stalled_s": (
                round(time.monotonic() - self.stalled_since, 3) if self.stalled_since else None
            ),
        }
