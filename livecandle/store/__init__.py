"""Redis storage: key schema (keys), atomic scripts (scripts), the Store, and the one
way to open a client (``connect``: a bounded pool, timeouts on every socket)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from livecandle.store.keys import Keys
from livecandle.store.store import ChartRead, ClosedLive, LiveWrite, Meta, Store, WriteResult

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT_S",
    "ChartRead",
    "ClosedLive",
    "Keys",
    "LiveWrite",
    "Meta",
    "Store",
    "StoreError",
    "WriteResult",
    "connect",
]

# Any failure of the storage (unreachable, too slow, out of memory, a script error).
StoreError = RedisError

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 3.0
# an idle pooled connection is PINGed before reuse after this long: a connection Redis
# dropped meanwhile is replaced instead of failing the request that picks it up
HEALTH_CHECK_INTERVAL_S = 30


def connect(
    url: str,
    cluster: bool = False,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    **kw: Any,
) -> aioredis.Redis:
    """An asyncio client for ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    At most ``max_connections`` connections (per node on a cluster): a burst of requests
    waits for a free one instead of opening thousands, and gives up (ConnectionError)
    after ``timeout_s``. Connecting and every reply also time out after ``timeout_s``
    (TimeoutError), so a paused Redis fails requests quickly (the web answers 503)
    instead of holding them. A dropped connection is retried once, at once; a timeout
    is not retried (it would only double the wait).
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        **kw,
    }
    if cluster:
        # the cluster client's node pools raise MaxConnectionsError (a ConnectionError)
        # when full rather than waiting: still bounded, still a 503
        client: Any = RedisCluster.from_url(url, max_connections=max_connections, **options)
        return client  # type: ignore[no-any-return]
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        **options,
    )
    return aioredis.Redis.from_pool(pool)
