"""RedisProbe: one PING on a connection of its own, in a worker thread, for /healthz.

A PING awaited on the event loop measures the loop as much as Redis: when a flood of
requests keeps the loop busy, or holds every pooled connection, the reply is read late
and a healthy Redis looks down. The probe's blocking socket in a thread sees only Redis:
its latency is Redis's round trip, and it fails only when Redis does not answer within
the client's socket timeout (or refuses the connection, or rejects the PING).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
import redis.connection

# with a client configured without one (tests), a probe still gives up
PROBE_TIMEOUT_S = 5.0

# asyncio-only settings of the client's connections; the probe has its own
_NOT_COPIED = frozenset(
    {"retry", "retry_on_error", "redis_connect_func", "event_dispatcher", "health_check_interval"}
)


class RedisProbe:
    def __init__(self, connection_class: type[redis.connection.AbstractConnection], **kw: Any):
        self.connection_class = connection_class
        self.options = kw

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> RedisProbe | None:
        """A probe reaching the same server as ``client`` the same way (TCP, TLS or unix
        socket, with its credentials); None for a client without a single connection
        pool (a cluster), or one built from unknown connection classes."""
        pool = getattr(client, "connection_pool", None)
        if pool is None:
            return None
        sync_class = next(
            (
                found
                for c in pool.connection_class.__mro__  # ours derive from redis-py's
                if isinstance(found := getattr(redis.connection, c.__name__, None), type)
                and issubclass(found, redis.connection.AbstractConnection)
            ),
            None,
        )
        if sync_class is None:
            return None
        options = {k: v for k, v in pool.connection_kwargs.items() if k not in _NOT_COPIED}
        timeout_s = options.get("socket_timeout") or PROBE_TIMEOUT_S
        options["socket_timeout"] = timeout_s
        options["socket_connect_timeout"] = options.get("socket_connect_timeout") or timeout_s
        try:
            sync_class(**options)  # only checks the options: connecting is lazy
        except TypeError:
            return None
        return cls(sync_class, **options)

    def ping_ms(self) -> float:
        """Connect, PING, disconnect (blocking: run it in a thread); the PING's round trip
        in ms. Raises redis-py's ConnectionError, TimeoutError or ResponseError."""
        conn: Any = self.connection_class(**self.options)  # redis-py is untyped here
        try:
            conn.connect()
            started_s = time.perf_counter()
            conn.send_command("PING")
            conn.read_response()
            return (time.perf_counter() - started_s) * 1000
        finally:
            conn.disconnect()
