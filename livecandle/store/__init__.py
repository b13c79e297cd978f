"""Redis storage: key schema (keys), atomic scripts (scripts), the Store, and the one
way to open a client (``connect``: a bounded pool, timeouts on every socket)."""

from __future__ import annotations

from redis.exceptions import RedisError

from livecandle.store.client import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_S, connect
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
