"""connect: the one way livecandle opens a Redis client, with a bounded pool and a
timeout on every socket.

redis-py (7.x) sends a command under ``asyncio.wait_for`` once a socket timeout is set.
On Python 3.11 ``wait_for`` swallows a cancellation that arrives as the send completes
(fixed in 3.12): the cancelled task goes on running, and every supervised task relies
on cancellation to stop. The connections made here send under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import PRIMARY

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 3.0
# an idle pooled connection is PINGed before reuse after this long: a connection Redis
# dropped meanwhile is replaced instead of failing the request that picks it up
HEALTH_CHECK_INTERVAL_S = 30


class _CancellableSend(AbstractConnection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """redis-py's, with ``asyncio.timeout`` where it has ``asyncio.wait_for``."""
        if not self.socket_timeout:
            await super().send_packed_command(command, check_health)
            return
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer: Any = self._writer
        try:
            async with asyncio.timeout(self.socket_timeout):
                writer.writelines(command)
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            raise redis.exceptions.ConnectionError(f"Error while writing to socket: {e}") from e
        except BaseException:
            await self.disconnect(nowait=True)  # a half-sent command: the socket is unusable
            raise


class _TcpConnection(_CancellableSend, Connection):
    pass


class _TlsConnection(_CancellableSend, SSLConnection):
    pass


class _UnixConnection(_CancellableSend, UnixDomainSocketConnection):
    pass


class _KeptNodes(NodesManager):
    """redis-py 7.4's, routing by the nodes it keeps (as redis-py 8 does, #4057).

    A topology refresh (a failover, a node that stopped answering) reads CLUSTER SLOTS
    into fresh node objects, keeps its old object of every node it knew, and then routes
    by the fresh ones: their connections are not the ones ``aclose`` closes (each
    refresh left a socket per node open until the garbage collector found it) and the
    kept nodes' roles go stale (a promoted replica is no primary to ``get_primaries``).
    Here the slots point at the kept nodes again, with the roles CLUSTER SLOTS gave."""

    __slots__ = ()

    async def initialize(self) -> None:
        await super().initialize()
        kept: dict[int, list[ClusterNode]] = {}  # slot ranges share one list: keep that
        for slot, nodes in self.slots_cache.items():
            same = kept.get(id(nodes))
            if same is None:
                same = kept[id(nodes)] = []
                for node in nodes:
                    known = self.nodes_cache.setdefault(node.name, node)
                    known.server_type = node.server_type
                    same.append(known)
            self.slots_cache[slot] = same
        primaries = self.get_nodes_by_server_type(PRIMARY)
        if primaries and (self.default_node is None or self.default_node not in primaries):
            self.default_node = primaries[0]


_CANCELLABLE: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _TcpConnection,
    SSLConnection: _TlsConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


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
    if cluster:
        # its node pools raise MaxConnectionsError (a ConnectionError) when full rather
        # than waiting: still bounded, still a 503
        client: Any = RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
            **kw,
        )
        # the cluster client takes no connection class: its nodes (those known now and
        # those it discovers, made from these kwargs) get ours, which send cancellably
        kwargs = client.connection_kwargs
        kwargs["connection_class"] = _CANCELLABLE.get(
            kwargs["connection_class"], kwargs["connection_class"]
        )
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = kwargs["connection_class"]
        client.nodes_manager.__class__ = _KeptNodes
        return client  # type: ignore[no-any-return]
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        **kw,
    )
    pool.connection_class = _CANCELLABLE.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis.from_pool(pool)
