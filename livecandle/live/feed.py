"""LiveFeed: market events in, exact forming candles out.

Takes the exchange's market events (``domain.events``: trades and candle snapshots with
named fields, decoded from the stream's frames by the exchange adapter); puts each
symbol's trades in order (``TradeSequencer``; missed ids are asked of the exchange's
``TradeHistory`` before anything after them is used); feeds the ``LiveCandleBuilder``;
seeds the first (partial) candle of each interval from a candle snapshot; closes candles
on the exchange's final snapshot or on the clock; and marks in each symbol's
``SymbolLive`` what the ``LiveWriter`` must write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from livecandle.backoff import delay_s
from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.clock import Clock
from livecandle.domain.events import (
    BadMessage,
    CandleSnapshot,
    EventDecoder,
    MarketEvent,
    TradeEvent,
    TradeHistory,
    UnknownMessage,
)
from livecandle.domain.intervals import Interval
from livecandle.domain.model import Trade
from livecandle.domain.sequencer import MAX_HELD, MAX_HELD_TOTAL, Offer, TradePool
from livecandle.live.state import RECENT_TRADES, RECENT_TRADES_TOTAL, SymbolState
from livecandle.live.writer import FinalCandle, LiveStates, SymbolLive
from livecandle.store.codec import to_row

log = logging.getLogger(__name__)

MAX_GAP_FILL = 200_000  # larger holes are abandoned (the candles are then incomplete)
FILL_GIVE_UP_S = 60.0  # a hole not fetched by then is abandoned: the symbol goes on
# messages handled between two turns of the event loop: at 00:00 UTC the whole market's
# 9,600 final klines come at once, and a backlog of them handled in one go (~80 us each)
# held the live writer's flushes (every live update) for half a second
DRAIN_MOST = 250
# the exchange's final candles handled per turn of the event loop, after the turn's
# messages: a final is put aside when it arrives (its figures not read yet), so the
# trades behind it in the queue (every live price) do not wait for the whole market's
# 9,600 at 00:00 UTC (each read, checked, closed and compared: ~20-40 us)
FINALS_PER_TURN = 200
# ... read FINALS_PER_SLICE at a time, the event loop turning between, and apart from the
# turn's messages: at 00:00 UTC a drain of 500 messages then 200 finals held the loop
# (every live price) for up to ~120 ms at a time (py-spy, 2 busy cores)
FINALS_PER_SLICE = 100
# trades held behind a hole: ``max_held`` per symbol, ``max_held_total`` across symbols
# (domain.sequencer); more and the hole is abandoned. Recent trades kept for seeding:
# ``recent_trades`` per symbol, ``recent_total`` across symbols (live.state)
# a failed fetch of missed trades waits 1 s, 2 s, ... up to 10 s (jittered); a fetch that
# found none yet (the exchange is behind its stream) retries sooner
FILL_RETRY_BASE_S = 1.0
FILL_EMPTY_BASE_S = 0.4
FILL_RETRY_CAP_S = 10.0
# a snapshot ahead of our trades asks the exchange for the missing ones once the symbol's
# own stream has gone this far past it (exchange time of its messages handled, not the
# wall clock: a consumer behind its queue, or a connection behind the others, must not
# mistake queued trades for lost ones) without them, and without any trade of it coming
# meanwhile (trades still coming are late, and a lost one among them shows as a hole)
BEHIND_MS = 2_000
BEHIND_URGENT_MS = 10_000
# after a silence, trades this much younger than the newest message handled may still be
# on another connection's way: not counted as missed
IN_FLIGHT_MS = 1_000

Frame = TypeVar("Frame")  # a raw stream message: opaque here, only the decoder reads it


class LiveFeed:
    """Live candles of ``symbols`` in ``intervals`` from an exchange's market events;
    ``history`` answers for trades the stream lost, ``on_stall(symbol)`` reconnects the
    stream carrying that symbol."""

    def __init__(
        self,
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        history: TradeHistory,
        clock: Clock,
        close_grace_ms: int = 2_000,
        silence_s: float = 10.0,
        on_stall: Callable[[str], Coroutine[Any, Any, None]] | None = None,
        fill_give_up_s: float = FILL_GIVE_UP_S,
        max_held: int = MAX_HELD,
        max_held_total: int = MAX_HELD_TOTAL,
        recent_trades: int = RECENT_TRADES,
        recent_total: int = RECENT_TRADES_TOTAL,
        drain_most: int = DRAIN_MOST,
        finals_per_turn: int = FINALS_PER_TURN,
        finals_per_slice: int = FINALS_PER_SLICE,
    ) -> None:
        self.drain_most = drain_most
        self.finals_per_turn = finals_per_turn
        self.finals_per_slice = finals_per_slice
        self._finals_later: deque[CandleSnapshot] = deque()  # put aside by ``consume``
        self.fill_give_up_s = fill_give_up_s
        self.close_grace_ms = close_grace_ms
        self.max_held = max_held
        self.held_pool = TradePool(max_held_total)
        self.recent_trades = recent_trades
        self.recent_pool = TradePool(recent_total)
        self.history = history
        self.clock = clock
        self.silence_s = silence_s
        self.on_stall = on_stall
        self.stalls = 0
        self._last_stall = 0.0
        self.intervals = tuple(intervals)
        self.states: dict[str, SymbolState] = {}
        self._lives = LiveStates()  # the writer's view: kept, not rebuilt
        self._fills: set[asyncio.Task[object]] = set()
        for s in symbols:
            self.add_symbol(s, close_grace_ms)
        # the newest exchange time of any message handled: trades of a symbol older than
        # this (less a margin between connections) should have reached us by now
        self.newest_ms = 0
        self.messages = 0
        self.bad_messages = 0
        self.unknown_events = 0
        self.last_bad: str | None = None

    def add_symbol(self, symbol: str, close_grace_ms: int | None = None) -> SymbolState:
        """Follow ``symbol`` (at run time too: its stream is subscribed by the caller)."""
        old = self.states.get(symbol)
        if old is not None:
            return old
        grace = self.close_grace_ms if close_grace_ms is None else close_grace_ms
        builder = LiveCandleBuilder(self.intervals, self.clock, grace)
        st = SymbolState(
            self._lives.adopt(SymbolLive(symbol, builder)),
            recent_cap=self.recent_trades,
            recent_pool=self.recent_pool,
        )
        st.sequencer.max_held, st.sequencer.pool = self.max_held, self.held_pool
        st.index = {i.name: n for n, i in enumerate(self.intervals)}
        st.since_ms, st.added = self.clock.now_ms(), time.monotonic()
        self.states[symbol] = st
        self._lives[symbol] = st.live
        return st

    def resume(
        self, symbol: str, agg_id: int, trade_id: int, candles: Sequence[CandleSnapshot]
    ) -> None:
        """Continue ``symbol`` where another worker's stored live candles stand (a lease
        hand-over): the trades after aggregate trade ``agg_id`` are fetched as a gap when
        the stream's first one arrives, and each stored complete forming candle (covering
        individual trades up to ``trade_id``) seeds its interval like an exchange snapshot."""
        st = self.states.get(symbol)
        if st is None or st.sequencer.last_id is not None or agg_id < 0 or trade_id < 0:
            return
        st.sequencer.last_id = agg_id
        st.last_trade_id = st.live.trade_id = trade_id
        st.live.agg_id = agg_id
        for snap in candles:
            i = st.index.get(snap.interval)
            if i is not None:
                st.pending_seeds[i] = snap

    def remove_symbol(self, symbol: str) -> bool:
        """Stop following ``symbol`` (it left TRADING): its live state, held and recent
        trades and fetches of missed trades go; what was stored stays."""
        st = self.states.pop(symbol, None)
        if st is None:
            return False
        self._lives.pop(symbol, None)
        st.sequencer.release()
        st.forget_recent()
        for task in list(self._fills):
            if task.get_name().endswith(f":{symbol}"):
                task.cancel()
        return True

    def live_states(self) -> LiveStates:
        """What the ``LiveWriter`` reads, by symbol (the same dict as symbols come and
        go)."""
        return self._lives

    # -- the consumer loop --------------------------------------------------------------

    async def consume(self, queue: asyncio.Queue[Frame], decode: EventDecoder[Frame]) -> None:
        """Handle the stream's raw messages, each turned into its event by ``decode``
        (the exchange adapter's; the frames themselves are never read here). Each turn
        of the event loop handles the messages waiting (trades first), then (the loop
        turning first, and every ``finals_per_slice``) at most ``finals_per_turn`` of the
        final candles put aside, oldest first: a candle's trades and its final are
        handled in the order they came, or the final later."""
        later = self._finals_later
        take = self._take
        while True:
            if not later:
                frame = await queue.get()
                self.messages += 1
                take(decode(frame))
            # drain what is already there without yielding per message, but yielding
            # every ``drain_most`` (the writer's flushes run between)
            most = self.drain_most
            for n in range(1, queue.qsize() + 1):
                if n % most == 0:
                    await asyncio.sleep(0)
                self.messages += 1
                take(decode(queue.get_nowait()))
            if later:
                await asyncio.sleep(0)  # the turn's messages and its finals apart
                per_slice = self.finals_per_slice
                count = min(len(later), self.finals_per_turn)
                for n in range(1, count + 1):
                    self.on_snapshot(later.popleft())
                    if n % per_slice == 0 or n == count:
                        await asyncio.sleep(0)

    def _take(self, event: MarketEvent | None) -> None:
        """Handle ``event`` now, or put it aside if it is a final candle."""
        if type(event) is TradeEvent:  # the common case first
            self.on_trade(event)
        elif type(event) is CandleSnapshot and event.final:
            self._finals_later.append(event)
        elif event is not None:
            self.handle(event)

    def handle(self, event: MarketEvent) -> None:
        if isinstance(event, TradeEvent):
            self.on_trade(event)
        elif isinstance(event, CandleSnapshot):
            self.on_snapshot(event)
        elif isinstance(event, BadMessage):
            self._bad(event)
        elif isinstance(event, UnknownMessage):
            self.unknown_events += 1
        else:  # serverShutdown: the stream client reconnects when the socket closes
            log.info("exchange announced a server shutdown")

    def _bad(self, event: BadMessage) -> None:
        if event.symbol is not None:  # readable enough to say whose: heard from it
            st = self.states.get(event.symbol)
            if st is None:
                return
            st.heard_from_stream()
        self.bad_messages += 1
        self.last_bad = event.reason

    # -- trades -------------------------------------------------------------------------

    def on_trade(self, ev: TradeEvent) -> None:
        st = self.states.get(ev.symbol)
        if st is None:
            return
        st.traded()
        if ev.event_ms > st.stream_ms:
            st.stream_ms = ev.event_ms
            if ev.event_ms > self.newest_ms:
                self.newest_ms = ev.event_ms
        seq = st.sequencer
        last = seq.last_id
        if last is not None and ev.agg_id == last + 1 and seq.gap is None:
            seq.last_id = ev.agg_id  # the common case, without a Trade object
            self._apply(st, ev)
            return
        self._offer(st, ev.trade())

    def _offer(self, st: SymbolState, trade: Trade) -> bool:
        """Offer a trade to the symbol's sequencer and act on the verdict; True if it
        was applied now. Held trades at their bound abandon the hole first."""
        seq = st.sequencer
        verdict = seq.offer(trade)
        while verdict is Offer.FULL:  # each abandon delivers held trades: this ends
            self._abandon(st, f"{len(seq.held)} trades held behind a hole (the bound)")
            verdict = seq.offer(trade)
        if verdict is Offer.NEXT:
            self._apply(st, trade)
            return True
        if verdict is Offer.GAP:
            self._start_fill(st)
        return False

    def _apply(self, st: SymbolState, t: Trade | TradeEvent) -> None:
        first, last, time_ms = t.first_id, t.last_id, t.time_ms
        if first < 0 or (t.price == 0 and t.quantity == 0):
            return  # an invalid trade (Binance's 2022 audit placeholders)
        live = st.live
        closed = live.builder.add(time_ms, t.price, t.quantity, last - first + 1, t.buyer_is_maker)
        st.last_trade_id = live.trade_id = last
        live.agg_id = t.agg_id
        live.traded(time_ms)
        if time_ms > st.safe_ms:
            st.safe_ms = time_ms
        if closed:
            live.add_closed(closed)
        if st.pending_seeds or not live.builder.all_complete:
            st.remember(t if isinstance(t, Trade) else t.trade())
            if st.pending_seeds:
                self._try_pending(st)
        elif st.recent:
            st.forget_recent()

    def _start_fill(self, st: SymbolState) -> None:
        gap = st.sequencer.gap
        assert gap is not None
        if gap.size > MAX_GAP_FILL:
            self._abandon(st, f"{gap.size} trades missed, too many to fetch")
            return
        if st.filling:  # the running fill goes on with the new hole
            return
        st.filling = True
        self._spawn(self._fill(st), f"fill:{st.symbol}")

    def _abandon(self, st: SymbolState, why: str) -> None:
        """Go on without the missing trades. The candles that could hold them (from the
        forming one to the one of the first trade after the hole) are marked incomplete
        before the held trades close them."""
        seq = st.sequencer
        log.warning("%s: %s; continuing without them", st.symbol, why)
        first_after = min((t.time_ms for t in seq.held), default=None)
        st.live.builder.mark_incomplete(until_ms=first_after)
        for t in seq.abandon():
            self._apply(st, t)
        if seq.gap is not None:  # the held trades had a hole of their own
            self._start_fill(st)

    async def _fill(self, st: SymbolState) -> None:
        """Fetch missed trades over REST, then deliver them and everything held, in order.
        Any failure is retried until ``fill_give_up_s``; then (or when too many trades
        wait behind the hole) the hole is abandoned, so a symbol never freezes."""
        failed = False
        try:
            await self._fill_gaps(st)
        except Exception:  # a defect, not the exchange (its failures are retried)
            log.exception("%s: filling missed trades failed", st.symbol)
            failed = True
        finally:
            st.filling = False
        if failed and self.states.get(st.symbol) is st and st.sequencer.gap is not None:
            self._abandon(st, "the fill failed")  # the symbol goes on, never frozen

    async def _fill_gaps(self, st: SymbolState) -> None:
        seq = st.sequencer
        attempt = 0
        started = time.monotonic()
        abandoned = seq.abandoned
        while seq.gap is not None:
            gap = seq.gap
            if seq.abandoned != abandoned:  # a hole given up meanwhile (its held trades
                # at their bound): a hole among them has a time of its own
                abandoned, started, attempt = seq.abandoned, time.monotonic(), 0
            if time.monotonic() - started > self.fill_give_up_s:
                self._abandon(
                    st,
                    f"missed trades {gap.first_id}..{gap.last_id} could not be fetched "
                    f"within {self.fill_give_up_s:g} s",
                )
                started, attempt = time.monotonic(), 0  # a hole among the held: anew
                abandoned = seq.abandoned
                continue
            try:
                fetched = await self.history.trades_after(
                    st.symbol, gap.first_id - 1, min(1000, gap.size)
                )
                trades = [t for t in fetched if t.agg_id <= gap.last_id]
            except Exception as e:  # whatever failed: retry, then give up
                attempt += 1
                log.warning(
                    "%s: cannot fetch missed trades %d..%d (%s: %s)",
                    st.symbol,
                    gap.first_id,
                    gap.last_id,
                    type(e).__name__,
                    e,
                )
                cap_s = min(FILL_RETRY_CAP_S, self.fill_give_up_s)
                await asyncio.sleep(delay_s(attempt, FILL_RETRY_BASE_S, cap_s))
                continue
            if not trades:
                attempt += 1
                await asyncio.sleep(delay_s(attempt, FILL_EMPTY_BASE_S, FILL_RETRY_CAP_S))
                continue
            attempt = 0
            for t in seq.resolve(trades):
                self._apply(st, t)
        log.info("%s: filled a gap; %d trades recovered so far", st.symbol, seq.recovered)

    # -- candle snapshots: seeding, exact closing, cross-checks -----------------------

    def on_snapshot(self, ev: CandleSnapshot) -> None:
        st = self.states.get(ev.symbol)
        if st is None:
            return
        st.heard_from_stream()
        if ev.event_ms > st.stream_ms:
            st.stream_ms = ev.event_ms
            if ev.event_ms > self.newest_ms:
                self.newest_ms = ev.event_ms
        i = st.index.get(ev.interval)
        if i is None:
            return
        b = st.live.builder
        last = ev.last_trade_id
        if last >= 0 and st.last_trade_id >= last and st.sequencer.gap is None:
            # at exchange time event_ms the newest trade was one we have (a snapshot
            # without any trade, id -1, says nothing about trades before its own open)
            if st.safe_ms < ev.event_ms:
                st.safe_ms = ev.event_ms
            st.behind_ms = st.behind_first_ms = 0
        elif not st.behind_ms or st.last_trade_id >= st.behind_id:
            # the first snapshot ahead of our trades (or the first since those of the
            # last one came): its trades are awaited for BEHIND_MS of the stream
            st.behind_ms = st.behind_first_ms = ev.event_ms
            st.behind_id, st.behind_had_id = last, st.last_trade_id
        span_ms = ev.event_ms - ev.open_ms
        if span_ms > 2 * st.guessed_span_ms:  # how often does it trade? (about once)
            first = ev.first_trade_id
            st.guess_gap(span_ms, last - first + 1 if first >= 0 else 0)
        if ev.final:
            self._final(st, i, ev)
        elif not b.is_complete(i) and b.open_of(i) == ev.open_ms:
            st.pending_seeds[i] = ev
            self._try_pending(st)

    def _final(self, st: SymbolState, i: int, ev: CandleSnapshot) -> None:
        """The exchange's final candle: stored at once as the official candle (by the
        writer); close ours now if every trade of it is in, and compare the two."""
        live = st.live
        if ev.row is not None:
            live.add_final(FinalCandle(self.intervals[i], ev.open_ms, ev.close_ms, ev.row))
        b = live.builder
        if st.last_trade_id < ev.last_trade_id or st.sequencer.gap is not None:
            return  # trades of that candle are still on their way
        if b.open_of(i) == ev.open_ms:
            closed = b.roll_to(ev.close_ms + 1)
            if closed:
                live.add_closed(closed)
        prev = b.previous[i]
        if prev is None or prev.open_ms != ev.open_ms or not b.previous_complete(i):
            return
        official = ev.candle
        if official is None:
            return
        # as published (quotes at 8 decimals); equal amounts are equal rows, without
        # formatting both (the whole market's closes come ~1,600 at once)
        if official == prev or to_row(official) == to_row(prev):
            st.matches += 1
        else:
            st.mismatches += 1
            log.warning(
                "%s %s %d: live candle differs from the exchange's final candle: "
                "live %s, exchange %s",
                st.symbol,
                ev.interval,
                ev.open_ms,
                to_row(prev),
                to_row(official),
            )

    def _try_pending(self, st: SymbolState) -> None:
        for i, snap in list(st.pending_seeds.items()):
            b = st.live.builder
            if b.is_complete(i) or b.open_of(i) != snap.open_ms:
                del st.pending_seeds[i]
                continue
            if st.last_trade_id < snap.last_trade_id:
                continue  # the snapshot is ahead of our trades: wait for them
            after = st.trades_after(snap.last_trade_id, snap.open_ms)
            del st.pending_seeds[i]
            candle = None if after is None else snap.candle  # read only when it can seed
            if after is None or candle is None:
                continue  # not on a trade boundary, too old, unreadable: wait for the next
            if b.seed(i, candle, after):
                st.live.dirty = True

    # -- time ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Close candles by the clock when the exchange's final snapshot did not (a period
        without trades still ends), but only up to the exchange time by which every
        trade is known to be in: never across a stall, a lost message or a gap fill (the
        candle then closes exactly when its trades arrive). Also the stall watchdog."""
        now = self.clock.now_ms()
        mono = time.monotonic()
        longest_s, silence_s = self.quiet_s, self.silence_s
        for st in self.states.values():
            silent_s = mono - (st.heard or st.added)
            if (
                silent_s > silence_s  # the least quiet_s: most symbols stop here
                and silent_s > (st.quiet_s(silence_s, longest_s) if st.heard else longest_s)
                and not st.checking_silence
            ):
                # never heard from since it was added (a subscription that did not take
                # is silent too): after the longest quiet, since every candle stream
                # sends a final kline at each close
                st.checking_silence = True
                self._spawn(self._check_silence(st), f"silence:{st.symbol}")
            if st.sequencer.gap is not None:
                continue
            if (
                st.behind_ms
                and st.stream_ms - st.behind_ms > BEHIND_MS
                and st.sequencer.last_id is not None
            ):
                urgent = st.stream_ms - st.behind_first_ms > BEHIND_URGENT_MS
                if st.last_trade_id >= st.behind_id:
                    # its trades came after it (the stream moved on with them: a symbol's
                    # first trades after a snapshot made before we subscribed, trades on
                    # their way while its snapshots ran ahead): nothing is missing
                    st.behind_ms = st.behind_first_ms = 0
                elif st.last_trade_id > st.behind_had_id and not urgent:
                    # its trades still come, late (their connection behind its snapshots'):
                    # wait on. A lost one among them shows as a hole when the next comes;
                    # only lost last ones need asking for, and after them trades stop
                    st.behind_ms, st.behind_had_id = st.stream_ms, st.last_trade_id
                else:
                    st.behind_ms = st.stream_ms  # once every BEHIND_MS at most
                    # a look at first (a connection running late looks the same), urgent
                    # when the stream has gone on for long without the trades
                    self._spawn(self._tail_fetch(st, speculative=not urgent), f"tail:{st.symbol}")
            # advance(min(now, safe_ms + grace)) closes something only from the next
            # boundary on: asked first, without the call (1,600 symbols ten times a second)
            live = st.live
            b = live.builder
            boundary = b.boundary_ms
            if boundary < 0 or st.safe_ms < boundary or now - b.close_grace_ms < boundary:
                continue
            closed = b.advance(min(now, st.safe_ms + b.close_grace_ms))
            if closed:
                live.add_closed(closed)

    @property
    def quiet_s(self) -> float:
        """The longest a symbol may be silent before the exchange is asked whether its
        stream lost trades: ``silence_s`` beyond the shortest interval (up to a minute),
        since every candle stream sends its final kline at each close, trades or not: a
        quiet market is never silent that long, so thousands of rarely traded symbols
        cost no request. A busy symbol is asked sooner (``SymbolState.quiet_s``)."""
        shortest_ms = min((i.length_ms for i in self.intervals if i.length_ms), default=0)
        return self.silence_s + min(shortest_ms, 60_000) / 1000

    async def _check_silence(self, st: SymbolState) -> None:
        """A symbol silent for ``quiet_s``: a quiet market, or did its stream stop? The
        exchange tells (a speculative request, spare weight only): trades after our
        newest (before the first: since the symbol was added) that are older than the
        newest message handled (less a second between connections) mean the stream lost
        them (they are applied, and the streams reconnect); none mean the market is just
        quiet; newer ones may still be in the queue (a busy consumer) or on the wire."""
        before_ms = (self.newest_ms or self.clock.now_ms()) - IN_FLIGHT_MS
        told = True  # the exchange answered (else: no reason to wait longer next time)
        try:
            last = st.sequencer.last_id
            if last is None:
                # the oldest trade since it was added, not the newest: a busy symbol's
                # newest is always younger than the margin (its stall went unseen)
                first = await self.history.first_trades(
                    st.symbol, st.since_ms, before_ms - 1, 1, speculative=True
                )
                missed = any(st.since_ms <= t.time_ms < before_ms for t in first)
            else:
                found = await self._tail_fetch(st, speculative=True, before_ms=before_ms)
                missed, told = found > 0, found >= 0
        except Exception as e:  # cannot tell: the next silence asks again
            log.warning("%s: silent, and the exchange cannot be asked (%s)", st.symbol, e)
            missed = told = False
        finally:
            st.checking_silence = False
            st.heard = time.monotonic()  # look again after another silence
        mono = time.monotonic()
        if told and not missed:
            st.found_quiet(self.silence_s, self.quiet_s)
        if missed and not st.stalled_since:
            st.stalled_since = mono
        if missed and self.on_stall is not None and mono - self._last_stall > self.silence_s:
            self._last_stall = mono
            self.stalls += 1
            log.warning(
                "%s: silent for %.0f s while the exchange has trades: reconnecting",
                st.symbol,
                mono - st.streamed,
            )
            self._spawn(self.on_stall(st.symbol), "stall-reconnect")

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._fills.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._fills.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("%s failed: %s: %s", task.get_name(), type(e).__name__, e, exc_info=e)

    async def _tail_fetch(
        self, st: SymbolState, speculative: bool = False, before_ms: int | None = None
    ) -> int:
        """A snapshot showed trades newer than any we received, and none followed (the last
        messages were lost): fetch them over REST. Returns how many the exchange had
        after our newest (those before ``before_ms`` if given; -1: it could not be
        asked)."""
        last = st.sequencer.last_id
        if last is None:
            return 0
        try:
            trades = await self.history.trades_after(st.symbol, last, 1000, speculative)
        except Exception as e:  # the next snapshot or silence asks again
            log.warning("%s: cannot fetch trades after %d (%s)", st.symbol, last, e)
            return -1
        if self.states.get(st.symbol) is not st:
            return 0  # no longer followed
        for trade in trades:
            if self._offer(st, trade):
                st.sequencer.recovered += 1
        if before_ms is not None:
            return sum(1 for t in trades if t.time_ms < before_ms)
        return len(trades)

    async def run_ticker(self, period_s: float = 0.1) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.tick()

    def stats(self) -> dict[str, Any]:
        silence_s, longest_s = self.silence_s, self.quiet_s
        return {
            "messages": self.messages,
            "stalls": self.stalls,
            "bad_messages": self.bad_messages,
            "unknown_events": self.unknown_events,
            "last_bad": self.last_bad,
            "symbols": {s: st.stats(silence_s, longest_s) for s, st in self.states.items()},
        }
