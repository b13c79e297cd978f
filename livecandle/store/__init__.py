"""Redis storage: key schema (keys), atomic scripts (scripts) and the Store."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from livecandle.store.keys import Keys
from livecandle.store.store import ChartRead, ClosedLive, LiveWrite, Meta, Store, WriteResult

__all__ = [
    "ChartRead",
    "ClosedLive",
    "Keys",
    "LiveWrite",
    "Meta",
    "Store",
    "WriteResult",
    "connect",
]


def connect(url: str, cluster: bool = False, **kw: Any) -> aioredis.Redis:
    """An asyncio client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
    if cluster:
        client: Any = RedisCluster.from_url(url, **kw)
        return client  # type: ignore[no-any-return]
    return aioredis.Redis.from_url(url, **kw)
