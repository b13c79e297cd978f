"""Service: the running parts of one process (fetcher, stream, exchange client, tasks),
assembled for the chosen roles, and their status for the web app (``web.status.Status``:
health, metrics, server time)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import msgspec

from livecandle.backoff import Backoff
from livecandle.config import Settings
from livecandle.domain.events import CandleSnapshot
from livecandle.domain.model import SeriesKey
from livecandle.domain.universe import Change
from livecandle.exchange.binance.feed_source import RestTradeHistory, decode_frame, streams_for
from livecandle.exchange.binance.rest import BinanceError, BinanceRest, BinanceUnavailable
from livecandle.exchange.binance.stream import BinanceStream
from livecandle.live.feed import LiveFeed
from livecandle.live.writer import LiveWriter
from livecandle.official.background_fetcher import BackgroundFetcher
from livecandle.official.universe import ListingSource, OnDemand, Universe, exchange_listing
from livecandle.runtime.leases import LeaseManager, worker_id
from livecandle.runtime.supervisor import Supervisor
from livecandle.store import Store, StoreError
from livecandle.store.budget import RedisConnectionAttempts, RedisWeightWindow
from livecandle.store.codec import from_live
from livecandle.store.fencing import FencedStore
from livecandle.store.keys import HEALTH_TTL_MS
from livecandle.store.leases import Leases, Resume

log = logging.getLogger(__name__)


class Service:
    """The running parts of one process, for wiring and for health/metrics."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        roles: set[str],
        listing: ListingSource | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.roles = roles
        self.supervisor = Supervisor()
        self.rest = BinanceRest(settings.binance_rest_url)
        self.rest.budget.safety = settings.weight_safety
        self.rest.budget.max_in_flight = settings.rest_max_in_flight
        if settings.leases:  # several processes of one IP: one budget, in Redis
            self.rest.budget.shared = RedisWeightWindow(store)
        self.exchange_error: str | None = None
        self.web_url: str | None = None
        self.web_ready = asyncio.Event()
        self.exchange_ready = asyncio.Event()
        self.fetcher: BackgroundFetcher | None = None
        self.feed: LiveFeed | None = None
        self.stream: BinanceStream | None = None
        self.writer: LiveWriter | None = None
        self.universe: Universe | None = None
        self.leases: LeaseManager | None = None
        # with leases, this worker follows only the symbols it owns (none at first)
        exchange_roles = "fetcher" in roles or "stream" in roles
        leased = settings.leases and exchange_roles
        if leased:
            self.leases = LeaseManager(
                Leases(store, worker_id(), settings.intervals),
                self._owned_change,
                settings.lease_ttl_ms,
            )
        own_symbols: tuple[str, ...] = () if leased else settings.symbols
        # the official writes of a leased worker are fenced by the epoch of their symbol
        owned_store = store if self.leases is None else FencedStore(store, self.leases.epoch_of)
        if exchange_roles:
            # the symbols followed: the explicit names, then whatever the listing says
            self.universe = Universe(
                store,
                settings.selection,
                listing or exchange_listing(self.rest),
                self.rest.clock.now_ms,
                settings.universe_period_s,
                following=settings.symbols,
                on_demand=OnDemand(settings.proxy_follow_cap, settings.proxy_follow_idle_s),
                warm=self._warm if "fetcher" in roles else None,
            )
            self.universe.listen(self._follow if self.leases is None else self._candidates)
        if "fetcher" in roles:
            self.fetcher = BackgroundFetcher(
                owned_store,
                self.rest,
                () if leased else settings.series,
                settings.backfill_candles,
                # a worker per request the plan may have in flight, and as many parsing
                # and storing the answers before: fewer would leave the budget unspent
                max(settings.fetch_concurrency, 2 * settings.rest_max_in_flight),
            )
        if "stream" in roles:
            self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
            self.stream = BinanceStream(
                settings.binance_ws_url,
                streams_for(own_symbols, settings.intervals),
                self.queue,
                silence_s=settings.stream_silence_s,
                attempts=RedisConnectionAttempts(store) if settings.leases else None,
            )
            self.feed = LiveFeed(
                own_symbols,
                settings.intervals,
                RestTradeHistory(self.rest),
                self.rest.clock,
                silence_s=settings.stream_silence_s,
                on_stall=self.stream.drop,
            )
            self.writer = LiveWriter(
                owned_store,
                self.feed.live_states(),
                self.rest.clock.now_ms,
                settings.live_write_period_ms,
                settings.live_publish_period_ms,
                fence=self.leases,
            )

    async def _connect_exchange(self) -> None:
        """Learn the exchange clock and limits; say once, clearly, when it is out of
        reach, and keep trying (cached data is served meanwhile)."""
        warned = False
        backoff = Backoff(1.0, 30.0)
        while True:
            try:
                if self.fetcher is not None:
                    await self.fetcher.prepare()
                else:
                    await self.rest.server_time()
                if warned:
                    log.warning(
                        "the exchange at %s is reachable again", self.settings.binance_rest_url
                    )
                self.exchange_error = None
                return
            except (BinanceUnavailable, BinanceError) as e:
                self.exchange_error = (
                    f"cannot reach the exchange at {self.settings.binance_rest_url}: {e}"
                )
                if not warned:
                    log.error("%s; serving cached data and retrying", self.exchange_error)
                    warned = True
                await backoff.sleep()

    async def start(self) -> None:
        """Start every role; the exchange-facing ones once the exchange answers (the web
        app serves cached data meanwhile)."""
        if self.fetcher is not None or self.stream is not None:
            self.supervisor.spawn("exchange:connect", self._start_exchange_roles, once=True)

    async def _start_exchange_roles(self) -> None:
        await self._connect_exchange()
        sup = self.supervisor
        universe = self.universe
        assert universe is not None
        try:  # the first reading before anything starts: it may add or stop symbols
            await universe.refresh()
        except (BinanceUnavailable, BinanceError) as e:  # the explicit names go on
            universe.last_error = str(e)
            log.warning("cannot read the exchange's listing (%s); retrying in the background", e)
        sup.spawn("universe", universe.run)
        sup.spawn("universe:demand", universe.run_demand)
        if self.leases is not None:
            self.leases.set_candidates(universe.following)
            sup.spawn("leases", self.leases.run)
        if self.fetcher is not None:
            fetcher = self.fetcher
            for series in fetcher.series:  # explicit names the exchange does not trade
                if series.symbol not in universe.following:
                    fetcher.remove_series(series)
            # one scheduler and a few workers for every series (the universe adds more)
            sup.spawn("fetch:scheduler", fetcher.run)
            sup.spawn("fetch:closed-listener", fetcher.listen_closed)
            sup.spawn("fetch:clock", fetcher.keep_clock)
        if self.stream is not None and self.feed is not None and self.writer is not None:
            sup.spawn("stream:socket", self.stream.run)
            sup.spawn("stream:feed", functools.partial(self.feed.consume, self.queue, decode_frame))
            sup.spawn("stream:ticker", self.feed.run_ticker)
            sup.spawn("stream:writer", self.writer.run)
            if self.fetcher is None:
                sup.spawn("stream:clock", self._keep_clock)
        sup.spawn("exchange:limits", self.rest.keep_limits)
        sup.spawn("health:beat", self._beat)
        self.exchange_ready.set()

    # -- the universe: symbols followed and stopped at run time -------------------------

    def _follow(self, change: Change) -> None:
        """Start and stop following symbols: fetcher series (history first, then kept
        current), live state and streams. A stopped symbol keeps everything stored."""
        intervals = self.settings.intervals
        for symbol in change.stop:
            if self.fetcher is not None:
                for interval in intervals:
                    self.fetcher.remove_series(SeriesKey(symbol, interval))
            if self.feed is not None:
                self.feed.remove_symbol(symbol)
        if self.stream is not None and change.stop:
            self.stream.unsubscribe(streams_for(change.stop, intervals))
        for symbol in change.follow:
            if self.fetcher is not None:
                for interval in intervals:
                    self.fetcher.add_series(SeriesKey(symbol, interval))
            if self.feed is not None:
                self.feed.add_symbol(symbol)
        if self.stream is not None and change.follow:
            self.stream.subscribe(streams_for(change.follow, intervals))

    def _warm(self, symbol: str) -> bool:
        """The first sync (the backfill) of every series of ``symbol`` is done."""
        fetcher = self.fetcher
        if fetcher is None:
            return False
        for interval in self.settings.intervals:
            st = fetcher.status.get(SeriesKey(symbol, interval))
            if st is None or st.filled_ms is None:
                return False
        return True

    # -- leases: the owned symbols are the followed ones ------------------------------

    def _candidates(self, change: Change) -> None:
        assert self.leases is not None
        self.leases.follow(change.follow, change.stop)

    async def _owned_change(self, taken: dict[str, Resume | None], gone: set[str]) -> None:
        """Follow the symbols taken, continuing each from its stored resume point (the
        live candles another worker stored), and stop following the ones given up."""
        seeds: dict[str, list[CandleSnapshot]] = {}
        resumed = {s: r for s, r in taken.items() if r is not None and r.trade_id >= 0}
        if resumed and self.feed is not None:
            seeds = await self._stored_candles(resumed)
        self._follow(Change(follow=tuple(taken), stop=tuple(gone)))
        if self.feed is not None:
            for symbol, r in resumed.items():
                self.feed.resume(symbol, r.agg_id, r.trade_id, seeds.get(symbol, []))

    async def _stored_candles(self, points: dict[str, Resume]) -> dict[str, list[CandleSnapshot]]:
        """The stored complete forming candles of each symbol, as snapshots covering the
        trades up to its resume point."""
        out: dict[str, list[CandleSnapshot]] = {}
        now_ms = self.rest.clock.now_ms()
        assert self.leases is not None
        stored = await self.leases.leases.live_candles(list(points), self.settings.intervals)
        for symbol, r in points.items():
            for interval in self.settings.intervals:
                raw = stored.get(SeriesKey(symbol, interval))
                if raw is None:
                    continue
                fields = msgspec.json.decode(raw)
                # the candle written with the resume point (not one written before or
                # after it: see store.leases.Resume), and complete
                expected = r.candles.get(interval.name)
                if not fields.get("complete") or expected is None:
                    continue
                if (fields.get("time"), fields.get("trades")) != expected:
                    continue
                candle = from_live(fields)
                out.setdefault(symbol, []).append(
                    CandleSnapshot(
                        symbol,
                        interval.name,
                        candle.open_ms,
                        candle.close_ms,
                        -1,
                        r.trade_id,
                        False,
                        now_ms,
                        candle,
                    )
                )
        return out

    async def _beat(self) -> None:
        """This process's fetcher and stream state in Redis, with a TTL, for the /healthz
        of web processes running apart (``serve --role web``). Redis failing is said once
        and retried at the next beat: not a task crash-looping through an outage."""
        failing_since_s: float | None = None
        while True:
            try:
                await self._beat_once()
            except StoreError as e:
                if failing_since_s is None:
                    failing_since_s = time.monotonic()
                    log.warning("cannot write the heartbeat to Redis (%s): retrying", e)
            else:
                if failing_since_s is not None:
                    log.warning(
                        "heartbeat written again after %.1f s",
                        time.monotonic() - failing_since_s,
                    )
                    failing_since_s = None
            await asyncio.sleep(HEALTH_TTL_MS / 1000 / 6)

    async def _beat_once(self) -> None:
        now_ms = self.rest.clock.now_ms()
        if self.fetcher is not None:
            await self.store.beat(
                "fetcher",
                {
                    "time": now_ms,
                    "series": self.fetcher.snapshot(),
                    "error": self.exchange_problem,
                    "problems": self.problems(),
                },
                HEALTH_TTL_MS,
            )
        if self.feed is not None and self.stream is not None:
            await self.store.beat(
                "stream",
                {
                    "time": now_ms,
                    **self.feed.stats(),
                    "reconnects": self.stream.reconnects,
                    "prices_republished": self.writer.prices_republished
                    if self.writer is not None
                    else 0,
                    "problems": self.problems(),
                },
                HEALTH_TTL_MS,
            )

    async def _keep_clock(self) -> None:
        while True:
            await asyncio.sleep(600)
            await self.rest.server_time()

    async def stop(self) -> None:
        await self.supervisor.stop()
        if self.leases is not None:  # after the writer stopped: at once, not at expiry
            await self.leases.stop()
        await self.rest.aclose()

    # -- status, for the web app (web.status.Status) ------------------------------------

    async def fetch_older(self, series: SeriesKey, end_ms: int, limit: int) -> int | None:
        if self.fetcher is None:
            return None  # a web process alone: the page says no older history here
        start_ms = series.interval.shift(end_ms, 1 - limit)
        return (await self.fetcher.sync(series, start_ms, end_ms)).fetched

    def now_ms(self) -> int:
        return self.rest.clock.now_ms()

    @property
    def exchange_problem(self) -> str | None:
        """Why the exchange cannot be used right now, if it cannot (for /healthz and the
        page's banner): the connection error, or the last failure before first contact."""
        if self.exchange_error is not None:
            return self.exchange_error
        needs = self.fetcher is not None or self.stream is not None
        if needs and not self.exchange_ready.is_set() and self.rest.last_error:
            return (
                f"cannot reach the exchange at {self.settings.binance_rest_url}: "
                f"{self.rest.last_error}"
            )
        return None

    @property
    def healthy(self) -> bool:
        return self.supervisor.healthy

    def problems(self) -> list[str]:
        """One readable line per thing that is wrong now (empty: all is well): the
        exchange out of reach, REST calls failing, requests paused by a 429 or a 418 ban,
        series whose fetch fails, symbols whose stream stalled, tasks failing, Redis refusing
        writes."""
        out = []
        if self.exchange_problem is not None:
            out.append(self.exchange_problem)
        rest = self.rest
        if rest.failing:
            out.append(
                f"REST calls to the exchange are failing: the last {rest.failures_in_row} "
                f"attempts failed, last: {rest.last_error}"
            )
        budget, now_ms = rest.budget, self.now_ms()
        if budget.blocked_until_ms > now_ms:
            wait_s = (budget.blocked_until_ms - now_ms) / 1000
            out.append(f"REST requests paused for {wait_s:.0f} s more: {budget.block_reason}")
        if self.fetcher is not None:
            followed = set(self.fetcher.series)
            for series, st in self.fetcher.status.items():
                if st.last_error is not None and series in followed:
                    out.append(f"fetching {series} fails: {st.last_error}")
        if self.feed is not None:
            for symbol, sym in self.feed.stats()["symbols"].items():
                # a quiet market is silent too: only a silence the exchange showed to have
                # lost trades is a problem
                stalled_s = sym.get("stalled_s")
                if stalled_s is not None:
                    out.append(
                        f"stream of {symbol} stalled: silent while the exchange has trades "
                        f"(for {stalled_s:.0f} s)"
                    )
        if self.universe is not None:
            for symbol in self.universe.stats()["not_trading"]:
                entry = self.universe.entries.get(symbol)
                status = entry.status if entry is not None else "not listed"
                out.append(f"symbol {symbol} is {status} on the exchange: not followed")
        for name, info in self.supervisor.status().items():
            if info["state"] not in ("running", "done"):
                error = info["last_error"]
                out.append(f"task {name} is {info['state']}" + (f": {error}" if error else ""))
        for part, error in (
            ("the live writer", self.writer.storage_error if self.writer is not None else None),
            ("the fetcher", self.fetcher.storage_error if self.fetcher is not None else None),
        ):
            if error:  # also carried by the heartbeat to a web process running apart
                out.append(f"Redis refuses writes of {part}: {error}")
        return out

    def health(self) -> dict[str, Any]:
        budget = self.rest.budget
        blocked = budget.blocked_until_ms > self.now_ms()
        parts: dict[str, Any] = {
            "exchange": {
                "rest_url": self.settings.binance_rest_url,
                "error": self.exchange_error,
                "weight_used": budget.used,
                "blocked_until_ms": budget.blocked_until_ms or None,
                "blocked": (
                    {"until_ms": budget.blocked_until_ms, "reason": budget.block_reason}
                    if blocked
                    else None
                ),
                "rest_failing": self.rest.failing,
                "rest_error": self.rest.last_error,
                "weight_limit": budget.limit,
                "weight_window_ms": budget.window_ms,
                "rate_limited": budget.limited,
                "plan": budget.stats(),
            },
            "tasks": self.supervisor.status(),
            "problems": self.problems(),
        }
        if self.stream is not None and self.feed is not None:
            parts["stream"] = {
                "connections": self.stream.stats(),
                "connection_attempts": self.stream.attempt_stats(),
                "reconnects": self.stream.reconnects,
                **self.feed.stats(),
            }
        if self.fetcher is not None:
            parts["fetcher"] = self.fetcher.snapshot()
        if self.universe is not None:
            parts["universe"] = self.universe.stats()
        if self.leases is not None:
            parts["leases"] = {**self.leases.stats(), "symbols": sorted(self.leases.owned)}
        # Redis refusing writes (down, paused, full: "OOM command not allowed") while it
        # may still answer PING: the live writer's and the fetcher's current failure
        writer_error = self.writer.storage_error if self.writer is not None else None
        fetcher_error = self.fetcher.storage_error if self.fetcher is not None else None
        parts["storage"] = {
            "error": writer_error or fetcher_error,
            "writer": writer_error,
            "fetcher": fetcher_error,
        }
        return parts

    def metrics(self) -> list[str]:
        lines = [
            "# TYPE livecandle_rest_weight_used gauge",
            f"livecandle_rest_weight_used {self.rest.budget.used}",
            "# TYPE livecandle_rest_requests_total counter",
            f"livecandle_rest_requests_total {self.rest.budget.requests}",
            "# TYPE livecandle_rest_retries_total counter",
            f"livecandle_rest_retries_total {self.rest.retries}",
            "# TYPE livecandle_rest_weight_limit gauge",
            f"livecandle_rest_weight_limit {self.rest.budget.limit}",
            "# TYPE livecandle_rest_rate_limited_total counter",
            f"livecandle_rest_rate_limited_total {self.rest.budget.limited}",
            "# TYPE livecandle_rest_failing gauge",
            f"livecandle_rest_failing {int(self.rest.failing)}",
            "# TYPE livecandle_task_restarts_total counter",
        ]
        for name, info in self.supervisor.status().items():
            lines.append(f'livecandle_task_restarts_total{{task="{name}"}} {info["restarts"]}')
        plan = self.rest.budget.stats()
        lines += [
            "# TYPE livecandle_rest_weight_per_second gauge",
            f"livecandle_rest_weight_per_second {plan['weight_per_s']}",
            "# TYPE livecandle_rest_in_flight gauge",
            f"livecandle_rest_in_flight {plan['in_flight']}",
        ]
        for metric, key, kind in (
            ("livecandle_rest_queue", "queued", "gauge"),
            ("livecandle_rest_queue_weight", "queued_weight", "gauge"),
            ("livecandle_rest_queue_oldest_wait_ms", "oldest_wait_ms", "gauge"),
            ("livecandle_rest_sent_total", "sent", "counter"),
            ("livecandle_rest_weight_sent_total", "weight_sent", "counter"),
        ):
            lines.append(f"# TYPE {metric} {kind}")
            for name, p in plan["priorities"].items():
                lines.append(f'{metric}{{priority="{name}"}} {p[key] or 0}')
        if self.feed is not None and self.stream is not None:
            st = self.feed.stats()
            attempts = self.stream.attempt_stats()
            lines += [
                "# TYPE livecandle_stream_messages_total counter",
                f"livecandle_stream_messages_total {st['messages']}",
                "# TYPE livecandle_stream_bad_messages_total counter",
                f"livecandle_stream_bad_messages_total {st['bad_messages']}",
                "# TYPE livecandle_stream_reconnects_total counter",
                f"livecandle_stream_reconnects_total {self.stream.reconnects}",
                "# TYPE livecandle_stream_connection_attempts_total counter",
                f"livecandle_stream_connection_attempts_total {attempts['attempts']}",
                "# TYPE livecandle_stream_connection_attempts_used gauge",
                f"livecandle_stream_connection_attempts_used {attempts['used']}",
                "# TYPE livecandle_stream_connection_attempts_waiting gauge",
                f"livecandle_stream_connection_attempts_waiting {attempts['waiting']}",
                "# TYPE livecandle_trade_gaps_total counter",
                "# TYPE livecandle_trades_recovered_total counter",
                "# TYPE livecandle_live_mismatches_total counter",
            ]
            for sym, s in st["symbols"].items():
                lines += [
                    f'livecandle_trade_gaps_total{{symbol="{sym}"}} {s["gaps"]}',
                    f'livecandle_trades_recovered_total{{symbol="{sym}"}} {s["recovered"]}',
                    f'livecandle_live_mismatches_total{{symbol="{sym}"}} {s["mismatches"]}',
                ]
        if self.universe is not None:
            st = self.universe.stats()
            lines += [
                "# TYPE livecandle_universe_followed gauge",
                f"livecandle_universe_followed {st['followed']}",
                "# TYPE livecandle_universe_symbols gauge",
            ]
            lines += [
                f'livecandle_universe_symbols{{status="{k}"}} {v}'
                for k, v in sorted(st["by_status"].items())
            ]
            if "on_demand" in st:  # symbols followed because clients asked for them
                lines += [
                    "# TYPE livecandle_universe_on_demand gauge",
                    f"livecandle_universe_on_demand {st['on_demand']['followed']}",
                    "# TYPE livecandle_universe_on_demand_cap gauge",
                    f"livecandle_universe_on_demand_cap {st['on_demand']['cap']}",
                ]

        if self.leases is not None:
            st = self.leases.stats()
            lines += [
                "# TYPE livecandle_leases_owned gauge",
                f"livecandle_leases_owned {st['owned']}",
                "# TYPE livecandle_leases_share gauge",
                f"livecandle_leases_share {st['share']}",
                "# TYPE livecandle_leases_lost_total counter",
                f"livecandle_leases_lost_total {st['lost']}",
                "# TYPE livecandle_leases_refused_writes_total counter",
                f"livecandle_leases_refused_writes_total {st['refused_writes']}",
            ]
        if self.writer is not None:
            lines += [
                "# TYPE livecandle_live_flushes_total counter",
                f"livecandle_live_flushes_total {self.writer.flushes}",
                "# TYPE livecandle_live_keys_written_total counter",
                f"livecandle_live_keys_written_total {self.writer.keys_written}",
                "# TYPE livecandle_live_prices_republished_total counter",
                f"livecandle_live_prices_republished_total {self.writer.prices_republished}",
            ]
        if self.fetcher is not None:
            lines += [
                "# TYPE livecandle_fetch_syncs_total counter",
                f"livecandle_fetch_syncs_total {self.fetcher.syncs}",
                "# TYPE livecandle_official_latest_ms gauge",
            ]
            for series, s in self.fetcher.status.items():
                if s.latest is not None:
                    lines.append(f'livecandle_official_latest_ms{{series="{series}"}} {s.latest}')
        # official rows that replaced a different stored one, by who found the difference
        replaced = {"stream": self.writer.finals_replaced} if self.writer is not None else {}
        if self.fetcher is not None:
            replaced["rest"] = self.fetcher.replaced
            reconciler = self.fetcher.reconciler
            replaced["reconcile"] = reconciler.replaced if reconciler is not None else 0
        if replaced:
            lines.append("# TYPE livecandle_official_replaced_total counter")
            for source, n in replaced.items():
                lines.append(f'livecandle_official_replaced_total{{source="{source}"}} {n}')
        return lines
