"""LiveFeed: stream messages in, exact forming candles out.

Decodes the queue filled by ``BinanceStream``; puts each symbol's aggTrades in order
(``TradeSequencer``; missed ids are fetched over REST before anything after them is
used); feeds the ``LiveCandleBuilder``; seeds the first (partial) candle of each interval
from a kline snapshot; closes candles on the exchange's final kline or on the clock; and
marks what the ``LiveWriter`` must write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from livecandle.domain.aggregator import LiveCandleBuilder
from livecandle.domain.clock import Clock
from livecandle.domain.intervals import Interval
from livecandle.domain.model import Trade, to_units
from livecandle.domain.sequencer import Offer, TradeSequencer
from livecandle.exchange.binance import parse
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.live.writer import SymbolLive
from livecandle.store.codec import to_row

log = logging.getLogger(__name__)

RECENT_TRADES = 50_000  # replay buffer for seeding from kline snapshots
MAX_GAP_FILL = 200_000  # larger holes are abandoned (the candles are then incomplete)
FILL_GIVE_UP_S = 60.0  # a hole not fetched by then is abandoned: the symbol goes on
MAX_HELD = 200_000  # trades held behind a hole; more and the hole is abandoned


class _Combined(msgspec.Struct):
    """``{"stream": "btcusdt@aggTrade", "data": {...}}`` (combined streams)."""

    stream: str
    data: parse.StreamEvent


_combined = msgspec.json.Decoder(_Combined)


def streams_for(symbols: Sequence[str], intervals: Sequence[Interval]) -> list[str]:
    """aggTrades for the candles, kline streams to seed and confirm them."""
    out = []
    for s in symbols:
        low = s.lower()
        out.append(f"{low}@aggTrade")
        out.extend(f"{low}@kline_{i.name}" for i in intervals)
    return out


@dataclass
class SymbolState(SymbolLive):
    sequencer: TradeSequencer = field(default_factory=TradeSequencer)
    recent: deque[Trade] = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))
    last_trade_id: int = -1  # individual trade id (aggTrade ``l``) of the newest trade
    pending_seeds: dict[int, parse.KlinePayload] = field(default_factory=dict)
    matches: int = 0
    mismatches: int = 0
    heard: float = 0.0  # monotonic time of the newest message about this symbol
    # exchange time up to which every trade is known to be in: candles ending before it
    # may be closed by the clock
    safe_ms: int = 0
    behind_since: float = 0.0  # a kline showed trades we have not received, since then
    checking_silence: bool = False  # asking the exchange whether a silence lost trades
    since_ms: int = 0  # exchange time the symbol was added
    index: dict[str, int] = field(default_factory=dict)

    @property
    def needs_seed(self) -> bool:
        return not self.builder.all_complete


class LiveFeed:
    def __init__(
        self,
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        rest: BinanceRest,
        clock: Clock,
        close_grace_ms: int = 2_000,
        silence_s: float = 10.0,
        on_stall: Callable[[], Coroutine[Any, Any, None]] | None = None,
        fill_give_up_s: float = FILL_GIVE_UP_S,
    ) -> None:
        self.fill_give_up_s = fill_give_up_s
        self.rest = rest
        self.clock = clock
        self.silence_s = silence_s
        self.on_stall = on_stall
        self.stalls = 0
        self._last_stall = 0.0
        self.intervals = tuple(intervals)
        self.states: dict[str, SymbolState] = {}
        for s in symbols:
            self.add_symbol(s, close_grace_ms)
        self.messages = 0
        self.bad_messages = 0
        self.unknown_events = 0
        self.last_bad: str | None = None
        self._fills: set[asyncio.Task[object]] = set()

    def add_symbol(self, symbol: str, close_grace_ms: int = 2_000) -> SymbolState:
        st = SymbolState(symbol, LiveCandleBuilder(self.intervals, self.clock, close_grace_ms))
        st.index = {i.name: n for n, i in enumerate(self.intervals)}
        st.since_ms = self.clock.now_ms()
        self.states[symbol] = st
        return st

    # -- the consumer loop --------------------------------------------------------------

    async def consume(self, queue: asyncio.Queue[str | bytes]) -> None:
        while True:
            message = await queue.get()
            self.handle(message)
            # drain what is already there without yielding per message
            for _ in range(queue.qsize()):
                self.handle(queue.get_nowait())

    def handle(self, message: str | bytes) -> None:
        self.messages += 1
        try:
            event = _combined.decode(message).data
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._bad(message, e)
            return
        if isinstance(event, parse.AggTradeEvent):
            self.on_agg_trade(event)
        elif isinstance(event, parse.KlineEvent):
            self.on_kline(event)
        else:  # serverShutdown: the stream client reconnects when the socket closes
            log.info("exchange announced a server shutdown")

    def _bad(self, message: str | bytes, error: Exception) -> None:
        text = message if isinstance(message, str) else message.decode(errors="replace")
        if '"result"' in text or '"id"' in text:
            return  # SUBSCRIBE replies
        if '"e":' in text and "aggTrade" not in text and "kline" not in text:
            self.unknown_events += 1
            return
        self.bad_messages += 1
        self.last_bad = f"{error}: {text[:200]}"
        log.warning("malformed stream message dropped (%s): %.200s", error, text)

    # -- trades -------------------------------------------------------------------------

    def on_agg_trade(self, ev: parse.AggTradeEvent) -> None:
        st = self.states.get(ev.s)
        if st is None:
            return
        st.heard = time.monotonic()
        try:
            price, qty = to_units(ev.p), to_units(ev.q)
        except ValueError as e:
            self.bad_messages += 1
            self.last_bad = f"aggTrade {ev.a} of {ev.s}: {e}"
            return
        seq = st.sequencer
        last = seq.last_id
        if last is not None and ev.a == last + 1 and seq.gap is None:
            seq.last_id = ev.a  # the common case, without a Trade object
            self._apply_fields(st, ev.a, price, qty, ev.f, ev.l, ev.T, ev.m)
            return
        trade = Trade(ev.a, price, qty, ev.f, ev.l, ev.T, ev.m)
        verdict = seq.offer(trade)
        if verdict is Offer.NEXT:
            self._apply(st, trade)
        elif verdict is Offer.GAP:
            self._start_fill(st)

    def _apply(self, st: SymbolState, t: Trade) -> None:
        self._apply_fields(
            st, t.agg_id, t.price, t.quantity, t.first_id, t.last_id, t.time_ms, t.buyer_is_maker
        )

    def _apply_fields(
        self,
        st: SymbolState,
        agg_id: int,
        price: int,
        qty: int,
        first: int,
        last: int,
        time_ms: int,
        maker: bool,
    ) -> None:
        if first < 0 or (price == 0 and qty == 0):
            return  # an invalid aggTrade (Binance's 2022 audit placeholders)
        closed = st.builder.add(time_ms, price, qty, last - first + 1, maker)
        st.last_trade_id = last
        st.last_trade_ms = time_ms
        if time_ms > st.safe_ms:
            st.safe_ms = time_ms
        st.dirty = st.price_dirty = True
        if closed:
            st.closed.extend(closed)
        if st.pending_seeds or not st.builder.all_complete:
            st.recent.append(Trade(agg_id, price, qty, first, last, time_ms, maker))
            if st.pending_seeds:
                self._try_pending(st)
        elif st.recent:
            st.recent.clear()

    def _start_fill(self, st: SymbolState) -> None:
        gap = st.sequencer.gap
        assert gap is not None
        if gap.size > MAX_GAP_FILL:
            self._abandon(st, f"{gap.size} trades missed, too many to fetch")
            return
        self._spawn(self._fill(st), f"fill:{st.symbol}")

    def _abandon(self, st: SymbolState, why: str) -> None:
        """Go on without the missing trades. The candles that could hold them (from the
        forming one to the one of the first trade after the hole) are marked incomplete
        before the held trades close them."""
        seq = st.sequencer
        log.warning("%s: %s; continuing without them", st.symbol, why)
        first_after = min((t.time_ms for t in seq.held), default=None)
        st.builder.mark_incomplete(until_ms=first_after)
        for t in seq.abandon():
            self._apply(st, t)
        if seq.gap is not None:  # the held trades had a hole of their own
            self._start_fill(st)

    async def _fill(self, st: SymbolState) -> None:
        """Fetch missed trades over REST, then deliver them and everything held, in order.
        Any failure is retried until ``fill_give_up_s``; then (or when too many trades
        wait behind the hole) the hole is abandoned, so a symbol never freezes."""
        seq = st.sequencer
        attempt = 0
        started = time.monotonic()
        while seq.gap is not None:
            gap = seq.gap
            if time.monotonic() - started > self.fill_give_up_s or len(seq.held) > MAX_HELD:
                self._abandon(
                    st,
                    f"missed trades {gap.first_id}..{gap.last_id} could not be fetched "
                    f"within {self.fill_give_up_s:g} s",
                )
                return
            try:
                rows = await self.rest.agg_trades(
                    st.symbol, from_id=gap.first_id, limit=min(1000, gap.size)
                )
                trades = [r.trade() for r in rows if r.a <= gap.last_id]
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
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt, self.fill_give_up_s))
                continue
            if not trades:
                attempt += 1
                await asyncio.sleep(min(10.0, 0.2 * 2**attempt))
                continue
            attempt = 0
            for t in seq.resolve(trades):
                self._apply(st, t)
        log.info("%s: filled a gap; %d trades recovered so far", st.symbol, seq.recovered)

    # -- klines: seeding, exact closing, cross-checks -----------------------------------

    def on_kline(self, ev: parse.KlineEvent) -> None:
        st = self.states.get(ev.s)
        if st is None:
            return
        st.heard = time.monotonic()
        k = ev.k
        i = st.index.get(k.i)
        if i is None:
            return
        b = st.builder
        if k.L >= 0 and st.last_trade_id >= k.L and st.sequencer.gap is None:
            # at exchange time E the newest trade was one we have (a kline without any
            # trade, L = -1, says nothing about trades before its own open)
            if st.safe_ms < ev.E:
                st.safe_ms = ev.E
            st.behind_since = 0.0
        elif not st.behind_since:
            st.behind_since = st.heard
        if k.x:
            self._final(st, i, k)
        elif not b.is_complete(i) and b.open_of(i) == k.t:
            st.pending_seeds[i] = k
            self._try_pending(st)

    def _final(self, st: SymbolState, i: int, k: parse.KlinePayload) -> None:
        """The exchange's final kline: close our candle now if every trade of it is in,
        and compare the two."""
        b = st.builder
        if st.last_trade_id < k.L or st.sequencer.gap is not None:
            return  # trades of that candle are still on their way
        if b.open_of(i) == k.t:
            closed = b.roll_to(k.T + 1)
            if closed:
                st.closed.extend(closed)
                st.dirty = True
        prev = b.previous[i]
        if prev is None or prev.open_ms != k.t or not b.previous_complete(i):
            return
        try:
            official = k.candle()
        except ValueError:
            return
        if to_row(official) == to_row(prev):  # as published: quotes at 8 decimals
            st.matches += 1
        else:
            st.mismatches += 1
            log.warning(
                "%s %s %d: live candle differs from the exchange's final kline: "
                "live %s, exchange %s",
                st.symbol,
                k.i,
                k.t,
                to_row(prev),
                to_row(official),
            )

    def _try_pending(self, st: SymbolState) -> None:
        for i, k in list(st.pending_seeds.items()):
            b = st.builder
            if b.is_complete(i) or b.open_of(i) != k.t:
                del st.pending_seeds[i]
                continue
            if st.last_trade_id < k.L:
                continue  # the snapshot is ahead of our trades: wait for them
            after = self._trades_after(st, k.L, k.t)
            del st.pending_seeds[i]
            if after is None:
                continue  # not on an aggTrade boundary, or too old: wait for the next
            try:
                snapshot = k.candle()
            except ValueError:
                continue
            if b.seed(i, snapshot, after):
                st.dirty = True

    @staticmethod
    def _trades_after(st: SymbolState, last_id: int, open_ms: int) -> list[Trade] | None:
        """The trades processed after a snapshot covering trades up to ``last_id``;
        None when that cannot be known exactly (the snapshot split an aggTrade, or
        trades between it and our first one were never seen)."""
        if last_id < 0:  # the snapshot had no trade yet in its candle
            return [t for t in st.recent if t.time_ms >= open_ms]
        out: list[Trade] = []
        found = False
        for t in st.recent:
            if t.first_id > last_id:
                out.append(t)
            elif t.last_id == last_id:
                found = True
            elif t.last_id > last_id:
                return None
        if found or (out and out[0].first_id == last_id + 1):
            return out
        return None

    # -- time ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Close candles by the clock when the exchange's final kline did not (a period
        without trades still ends), but only up to the exchange time by which every
        trade is known to be in: never across a stall, a lost message or a gap fill (the
        candle then closes exactly when its trades arrive). Also the stall watchdog."""
        now = self.clock.now_ms()
        mono = time.monotonic()
        for st in self.states.values():
            if st.heard and mono - st.heard > self.silence_s and not st.checking_silence:
                st.checking_silence = True
                self._spawn(self._check_silence(st), f"silence:{st.symbol}")
            if st.sequencer.gap is not None:
                continue
            if (
                st.behind_since
                and mono - st.behind_since > 1.0
                and st.sequencer.last_id is not None
            ):
                st.behind_since = mono  # once a second at most
                self._spawn(self._tail_fetch(st), f"tail:{st.symbol}")
            closed = st.builder.advance(min(now, st.safe_ms + st.builder.close_grace_ms))
            if closed:
                st.closed.extend(closed)
                st.dirty = True

    async def _check_silence(self, st: SymbolState) -> None:
        """A symbol silent for ``silence_s``: a quiet market, or did its stream stop? The
        exchange tells: trades after our newest mean the stream lost them (they are
        applied, and the streams reconnect); none mean the market is just quiet."""
        try:
            last = st.sequencer.last_id
            if last is None:
                rows = await self.rest.agg_trades(st.symbol, limit=1)
                missed = any(st.since_ms <= r.T for r in rows)
            else:
                missed = (await self._tail_fetch(st)) != 0
        except Exception as e:  # cannot tell: reconnect to be safe
            log.warning("%s: silent, and the exchange cannot be asked (%s)", st.symbol, e)
            missed = True
        finally:
            st.checking_silence = False
            st.heard = time.monotonic()  # look again after another silence
        mono = time.monotonic()
        if missed and self.on_stall is not None and mono - self._last_stall > self.silence_s:
            self._last_stall = mono
            self.stalls += 1
            log.warning(
                "%s: silent for %.0f s while the exchange has trades: reconnecting",
                st.symbol,
                self.silence_s,
            )
            self._spawn(self.on_stall(), "stall-reconnect")

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _tail_fetch(self, st: SymbolState) -> int:
        """A kline showed trades newer than any we received, and none followed (the last
        messages were lost): fetch them over REST. Returns how many the exchange had
        after our newest (-1: it could not be asked)."""
        last = st.sequencer.last_id
        if last is None:
            return 0
        try:
            rows = await self.rest.agg_trades(st.symbol, from_id=last + 1, limit=1000)
            trades = [r.trade() for r in rows]
        except Exception as e:  # the next kline or silence asks again
            log.warning("%s: cannot fetch trades after %d (%s)", st.symbol, last, e)
            return -1
        for trade in trades:
            verdict = st.sequencer.offer(trade)
            if verdict is Offer.NEXT:
                st.sequencer.recovered += 1
                self._apply(st, trade)
            elif verdict is Offer.GAP:
                self._start_fill(st)
        return len(trades)

    async def run_ticker(self, period_s: float = 0.1) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.tick()

    def stats(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "stalls": self.stalls,
            "bad_messages": self.bad_messages,
            "unknown_events": self.unknown_events,
            "last_bad": self.last_bad,
            "symbols": {
                s: {
                    "last_agg_id": st.sequencer.last_id,
                    "gaps": st.sequencer.gaps,
                    "recovered": st.sequencer.recovered,
                    "duplicates": st.sequencer.duplicates,
                    "filling": st.sequencer.gap is not None,
                    "late_trades": st.builder.late_trades,
                    "stale_trades": st.builder.stale_trades,
                    "matches": st.matches,
                    "mismatches": st.mismatches,
                    "seeded": not st.needs_seed,
                    "silent_s": round(time.monotonic() - st.heard, 3) if st.heard else None,
                }
                for s, st in self.states.items()
            },
        }
