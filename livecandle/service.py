"""Wiring: the Redis connection (embedded or configured) and the service's roles."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis

from livecandle.config import Settings
from livecandle.redis_server import RedisServer, _ping
from livecandle.store import Keys, Store, connect

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


async def serve(settings: Settings, roles: set[str], stop: asyncio.Event | None = None) -> None:
    """Run the given roles (``fetcher``, ``stream``, ``web``) until ``stop`` is set."""
    from livecandle.background_fetcher import BackgroundFetcher
    from livecandle.exchange.binance.rest import BinanceRest
    from livecandle.supervisor import Supervisor

    stop = stop or asyncio.Event()
    supervisor = Supervisor()
    async with redis_for(settings) as client:
        store = store_for(client, settings)
        await client.ping()
        rest = BinanceRest(settings.binance_rest_url)
        rest.budget.safety = settings.weight_safety
        fetcher = BackgroundFetcher(
            store, rest, settings.series, settings.backfill_candles, settings.fetch_concurrency
        )
        try:
            if "fetcher" in roles:
                await _prepare(fetcher)
                for series in settings.series:
                    if series.symbol in fetcher.unknown_symbols:
                        continue
                    supervisor.spawn(
                        f"fetch:{series}", functools.partial(fetcher.run_series, series)
                    )
                supervisor.spawn("fetch:closed-listener", fetcher.listen_closed)
                supervisor.spawn("fetch:clock", fetcher.keep_clock)
            await stop.wait()
        finally:
            await supervisor.stop()
            await rest.aclose()


async def _prepare(fetcher: object) -> None:
    from livecandle.background_fetcher import BackgroundFetcher
    from livecandle.exchange.binance.rest import BinanceUnavailable

    assert isinstance(fetcher, BackgroundFetcher)
    try:
        await fetcher.prepare()
    except BinanceUnavailable as e:
        log.error("the exchange cannot be reached (%s); serving what is cached and retrying", e)
