"""Wiring: the Redis connection (embedded or configured) and the service's roles."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis

from livecandle.config import Settings
from livecandle.runtime.redis_server import RedisServer, _ping
from livecandle.store import Keys, Store, connect
from livecandle.store.keys import HEALTH_TTL_MS

log = logging.getLogger(__name__)

URL_FILE = "redis.url"


def _running_embedded(data_dir: Path) -> str | None:
    """The URL of an embedded redis-server another livecandle process runs on
    ``data_dir`` (two servers must never share one append-only file)."""
    f = data_dir / URL_FILE
    if not f.exists():
        return None
    url = f.read_text().strip()
    if url.startswith("unix://"):
        probe: tuple[str, object] = ("unix", url[len("unix://") :])
    else:
        try:
            probe = ("tcp", int(url.rsplit(":", 1)[1].split("/")[0]))
        except (IndexError, ValueError):
            return None
    return url if _ping(probe) else None


@contextlib.asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A client for ``LIVECANDLE_REDIS_URL``, or for a private redis-server on
    ``data_dir`` (started here and stopped on exit, unless another process runs it)."""
    server: RedisServer | None = None
    url = settings.redis_url
    data_dir = Path(settings.data_dir).resolve()  # noqa: ASYNC240 - cheap, once
    if url is None:
        url = await asyncio.to_thread(_running_embedded, data_dir)
        if url is None:
            server = RedisServer(data_dir)
            url = await asyncio.to_thread(server.start)
            await asyncio.to_thread((data_dir / URL_FILE).write_text, url + "\n")
            log.info("started a private redis-server (%s, data in %s)", url, data_dir)
    client = connect(url, cluster=settings.redis_cluster)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
        if server is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(data_dir / URL_FILE)
            await asyncio.to_thread(server.stop)


def store_for(client: aioredis.Redis, settings: Settings) -> Store:
    return Store(client, Keys(settings.key_prefix, settings.redis_cluster))


class Service:
    """The running parts of one process, for wiring and for health/metrics."""

    def __init__(self, settings: Settings, store: Store, roles: set[str]) -> None:
        from livecandle.exchange.binance.feed_source import RestTradeHistory, streams_for
        from livecandle.exchange.binance.rest import BinanceRest
        from livecandle.exchange.binance.stream import BinanceStream
        from livecandle.live.feed import LiveFeed
        from livecandle.live.writer import LiveWriter
        from livecandle.official.background_fetcher import BackgroundFetcher
        from livecandle.runtime.supervisor import Supervisor

        self.settings = settings
        self.store = store
        self.roles = roles
        self.supervisor = Supervisor()
        self.rest = BinanceRest(settings.binance_rest_url)
        self.rest.budget.safety = settings.weight_safety
        self.exchange_error: str | None = None
        self.web_url: str | None = None
        self.web_ready = asyncio.Event()
        self.exchange_ready = asyncio.Event()
        self.fetcher: BackgroundFetcher | None = None
        self.feed: LiveFeed | None = None
        self.stream: BinanceStream | None = None
        self.writer: LiveWriter | None = None
        if "fetcher" in roles:
            self.fetcher = BackgroundFetcher(
                store,
                self.rest,
                settings.series,
                settings.backfill_candles,
                settings.fetch_concurrency,
            )
        if "stream" in roles:
            self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
            self.stream = BinanceStream(
                settings.binance_ws_url,
                streams_for(settings.symbols, settings.intervals),
                self.queue,
                silence_s=settings.stream_silence_s,
            )
            self.feed = LiveFeed(
                settings.symbols,
                settings.intervals,
                RestTradeHistory(self.rest),
                self.rest.clock,
                silence_s=settings.stream_silence_s,
                on_stall=self.stream.drop,
            )
            self.writer = LiveWriter(
                store,
                self.feed.live_states(),
                self.rest.clock.now_ms,
                settings.live_write_period_ms,
                settings.live_publish_period_ms,
            )

    async def _connect_exchange(self) -> None:
        """Learn the exchange clock and limits; say once, clearly, when it is out of
        reach, and keep trying (cached data is served meanwhile)."""
        from livecandle.exchange.binance.rest import BinanceError, BinanceUnavailable

        warned = False
        delay = 1.0
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
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def start(self) -> None:
        """Start every role; the exchange-facing ones once the exchange answers (the web
        app serves cached data meanwhile)."""
        if self.fetcher is not None or self.stream is not None:
            self.supervisor.spawn("exchange:connect", self._start_exchange_roles, once=True)

    async def _start_exchange_roles(self) -> None:
        await self._connect_exchange()
        sup = self.supervisor
        if self.fetcher is not None:
            fetcher = self.fetcher
            for series in self.settings.series:
                if series.symbol not in fetcher.unknown_symbols:
                    sup.spawn(f"fetch:{series}", functools.partial(fetcher.run_series, series))
            sup.spawn("fetch:closed-listener", fetcher.listen_closed)
            sup.spawn("fetch:clock", fetcher.keep_clock)
        if self.stream is not None and self.feed is not None and self.writer is not None:
            from livecandle.exchange.binance.feed_source import decode_frame

            sup.spawn("stream:socket", self.stream.run)
            sup.spawn("stream:feed", functools.partial(self.feed.consume, self.queue, decode_frame))
            sup.spawn("stream:ticker", self.feed.run_ticker)
            sup.spawn("stream:writer", self.writer.run)
            if self.fetcher is None:
                sup.spawn("stream:clock", self._keep_clock)
        sup.spawn("health:beat", self._beat)
        self.exchange_ready.set()

    async def _beat(self) -> None:
        """This process's fetcher and stream state in Redis, with a TTL, for the /healthz
        of web processes running apart (``serve --role web``)."""
        while True:
            now = self.rest.clock.now_ms()
            if self.fetcher is not None:
                await self.store.beat(
                    "fetcher",
                    {
                        "time": now,
                        "series": self.fetcher.snapshot(),
                        "error": self.exchange_problem,
                    },
                    HEALTH_TTL_MS,
                )
            if self.feed is not None and self.stream is not None:
                await self.store.beat(
                    "stream",
                    {"time": now, **self.feed.stats(), "reconnects": self.stream.reconnects},
                    HEALTH_TTL_MS,
                )
            await asyncio.sleep(HEALTH_TTL_MS / 1000 / 6)

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

    async def _keep_clock(self) -> None:
        while True:
            await asyncio.sleep(600)
            await self.rest.server_time()

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.rest.aclose()


async def serve(
    settings: Settings,
    roles: set[str],
    stop: asyncio.Event | None = None,
    started: Callable[[Service], None] | None = None,
) -> None:
    """Run the given roles (``fetcher``, ``stream``, ``web``) until ``stop`` is set."""
    stop = stop or asyncio.Event()
    async with redis_for(settings) as client:
        await cast(Awaitable[bool], client.ping())
        service = Service(settings, store_for(client, settings), roles)
        web_task = None
        try:
            if "web" in roles:
                from livecandle.web.app import run_web

                web_task = asyncio.create_task(run_web(service, stop))
            await service.start()
            if web_task is not None:
                ready = asyncio.ensure_future(service.web_ready.wait())
                await asyncio.wait({ready, web_task}, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if web_task.done():
                    await web_task  # it failed to listen: say why
            if started is not None:
                started(service)
            if web_task is not None:
                await web_task
            else:
                await stop.wait()
        finally:
            stop.set()
            if web_task is not None:
                with contextlib.suppress(Exception):
                    await web_task
            await service.stop()
