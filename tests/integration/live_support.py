"""Running the service in-process against the emulator, and recording what it says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import redis.asyncio as aioredis

from livecandle.config import Settings, parse_intervals, parse_symbols
from livecandle.runtime.serve import serve
from livecandle.runtime.service import Service
from tests.helpers import EmulatorProcess, Endpoints


@contextlib.asynccontextmanager
async def running_service(
    redis_url: str,
    emu: EmulatorProcess | Endpoints,
    intervals: str,
    roles: tuple[str, ...] = ("fetcher", "stream"),
    symbols: str = "BTCUSDT,ETHUSDT",
    wait_exchange: bool = True,
    **settings: Any,
) -> AsyncIterator[Service]:
    config = Settings(
        redis_url=redis_url,
        binance_rest_url=emu.rest_url,
        binance_ws_url=emu.ws_url,
        symbols=parse_symbols(symbols),
        intervals=parse_intervals(intervals),
        backfill_candles=settings.pop("backfill_candles", 5),
        stream_silence_s=settings.pop("stream_silence_s", 3.0),
        **settings,
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Service] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, set(roles), stop, started=ready.set_result))
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            await task  # raises what went wrong
        service = await ready
        if wait_exchange and (service.fetcher is not None or service.stream is not None):
            async with asyncio.timeout(60):
                await service.exchange_ready.wait()
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass
class LiveRecorder:
    """Subscribes to the live batch channel: the last version of every closed candle
    (``previous``) and every forming candle seen."""

    redis: aioredis.Redis
    closed: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    forming: list[dict[str, Any]] = field(default_factory=list)
    prices: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    official_latest: dict[tuple[str, str], int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __aenter__(self) -> LiveRecorder:
        self._task = asyncio.create_task(self._run())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe("live_updates", "klines_updated")
        self._ready.set()
        try:
            async for m in pubsub.listen():
                if m["type"] != "message":
                    continue
                batch = msgspec.json.decode(m["data"])
                if m["channel"] == b"klines_updated":
                    async with self._changed:
                        key = (batch["symbol"], batch["interval"])
                        self.official_latest[key] = batch["latest"]
                        self._changed.notify_all()
                    continue
                async with self._changed:
                    self.batches.append(batch)
                    del self.batches[:-2000]
                    self.prices.extend(batch["prices"])
                    for c in batch["candles"]:
                        self.forming.append(c)
                        del self.forming[:-5000]
                        p = c.get("previous")
                        if p is not None:
                            self.closed[(c["symbol"], c["interval"], p["time"])] = p
                    self._changed.notify_all()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def wait_for(self, predicate: Any, within_s: float) -> None:
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(predicate)


async def official(emu: EmulatorProcess, symbol: str, interval: str, open_ms: int) -> list[Any]:
    async with httpx.AsyncClient() as client:
        r = await client.get(
            emu.rest_url + "/api/v3/klines",
            params={"symbol": symbol, "interval": interval, "startTime": open_ms, "limit": 1},
        )
        rows: list[list[Any]] = r.json()
    assert rows and rows[0][0] == open_ms, (symbol, interval, open_ms, rows)
    return rows[0]
