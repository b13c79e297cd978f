"""A redis-server of one test's own, to pause (SIGSTOP) or fill up, and a client for it
made the way the service makes its own (``store.connect``)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from livecandle.runtime.redis_server import RedisServer
from livecandle.store import connect


@contextlib.contextmanager
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of one test alone (never the session's): it gets paused or filled."""
    with RedisServer(tmp_path / "redis", persist=False, tcp=True) as s:
        yield s


@contextlib.contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """redis-server stopped by SIGSTOP (it accepts nothing, answers nothing), then resumed."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def full(c: aioredis.Redis) -> AsyncIterator[None]:
    """Redis over ``maxmemory`` with ``noeviction``: every write is refused ("OOM command
    not allowed when used memory > 'maxmemory'"); reads and PUBLISH still work."""
    await c.set("ballast", b"x" * 2_000_000)
    await c.config_set("maxmemory-policy", "noeviction")
    await c.config_set("maxmemory", "1mb")
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            await c.set("probe", b"1")
        yield
    finally:
        await c.config_set("maxmemory", "0")
        await c.delete("ballast")


@contextlib.asynccontextmanager
async def client(url: str, **kw: Any) -> AsyncIterator[aioredis.Redis]:
    c = connect(url, **kw)
    try:
        yield c
    finally:
        await c.aclose()


async def command_stats(c: aioredis.Redis, command: str) -> dict[str, int]:
    """``calls`` (executed) and ``rejected_calls`` (refused, e.g. OOM) of ``command``
    since the last ``CONFIG RESETSTAT``."""
    info = await c.info("commandstats")
    stats = info.get(f"cmdstat_{command}", {})
    return {k: int(stats.get(k, 0)) for k in ("calls", "rejected_calls")}
