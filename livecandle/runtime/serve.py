"""Start-up: the Redis connection (configured, or a private embedded redis-server), the
``Service`` of the chosen roles, the web server, and the order they start and stop in."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis
import uvicorn

from livecandle.config import Settings
from livecandle.official.universe import ListingSource
from livecandle.runtime import http_server, logs
from livecandle.runtime.header_timeout import PeerConnections, with_header_timeout
from livecandle.runtime.redis_server import RedisServer, _ping
from livecandle.runtime.service import Service
from livecandle.store import Keys, Store, connect
from livecandle.web.app import build_app
from livecandle.web.books import Books

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
    client = connect(
        url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
    )
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


async def run_web(service: Service, stop: asyncio.Event) -> None:
    """Serve HTTP + socket.io on the configured address until ``stop`` is set."""
    settings = service.settings
    # the proxy's order books: their snapshots go through the process's one weight plan
    attempts = service.stream.attempts if service.stream is not None else None
    books = Books(service.rest, settings.binance_ws_url, attempts=attempts)
    asgi, api, realtime = build_app(service, service.store, settings, service.rest, books)
    service.supervisor.spawn("web:realtime-live", realtime.listen_live)
    service.supervisor.spawn("web:realtime-notices", realtime.listen_notices)
    service.supervisor.spawn("web:realtime-flush", realtime.flush_loop)
    if api.served.dynamic:  # patterns: the served symbols follow the stored universe
        api.on_served_change = lambda: realtime.serve_symbols(api.served.symbols)
        with contextlib.suppress(Exception):  # Redis down: the loop below reads it later
            await api.load_universe()
        service.supervisor.spawn("web:universe", api.follow_universe)
        if service.universe is not None:  # in this process: at once, not next period
            service.universe.listen(lambda _: api.load_universe())
    config = uvicorn.Config(
        asgi,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_ping_interval=20,
        ws_ping_timeout=20,
        # a larger frame closes its connection (1009) before it is held in memory
        ws_max_size=settings.ws_max_bytes,
        http=with_header_timeout(
            settings.header_timeout_s, PeerConnections(settings.connections_per_ip)
        ),
    )
    server, task, port = await http_server.start(config)
    service.web_url = f"http://{settings.host}:{port}"
    # everything allocated so far lives as long as the process: keep it out of the
    # collector's scans, so full collections (the p99 of a busy server) stay short
    gc.collect()
    gc.freeze()
    service.web_ready.set()
    log.info("livecandle is serving %s", service.web_url)
    print(f"livecandle: open {service.web_url} in a browser", flush=True)
    try:
        await stop.wait()
    finally:
        await http_server.stop(server, task)
        await books.aclose()


# middle collections between two full ones (Python's default: 10)
FULL_COLLECTION_EVERY = 1_000


def settle_gc() -> None:
    """For a service process once started. The followed market's state (universe,
    per-symbol builders, sequencers, schedules) lives as long as the process: frozen out
    of the collector's scans. And a full collection at most every ~1,000 middle ones
    (minutes, not seconds): each stalls the loop (the whole market's stream process: 9
    of 40-120 ms in 50 s, its live p99); what only a cycle keeps alive waits longer."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


async def serve(
    settings: Settings,
    roles: set[str],
    stop: asyncio.Event | None = None,
    started: Callable[[Service], None] | None = None,
    listing: ListingSource | None = None,
    nice: int = 0,
) -> None:
    """Run the given roles (``fetcher``, ``stream``, ``web``) until ``stop`` is set;
    ``listing`` replaces the exchange's exchangeInfo as the universe's source (tests);
    ``nice``: lower this process's CPU priority by that much once Redis is up (a private
    redis-server started here keeps the normal priority)."""
    stop = stop or asyncio.Event()
    logs.install()  # before the web app: socket.io's loggers get no handler of their own
    async with redis_for(settings) as client:
        if nice:
            os.nice(nice)
            log.info("CPU priority lowered by %d (LIVECANDLE_FETCHER_NICE)", nice)
        await cast(Awaitable[bool], client.ping())
        service = Service(settings, store_for(client, settings), roles, listing)
        web_task = None
        try:
            if "web" in roles:
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
