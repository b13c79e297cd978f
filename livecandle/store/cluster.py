"""What the Store does differently on a Redis Cluster (``LIVECANDLE_REDIS_CLUSTER=1``).

- Pipelines: redis-py's cluster pipeline sends each command to the master of its key's
  slot, so commands of many series (many slots) go in one call. Scripts are run by SHA:
  a master that never saw one (a replica just promoted, a restarted node: the script
  cache is neither replicated nor persisted) answers NOSCRIPT, and only those commands
  are sent again once every master has loaded the scripts (nothing runs twice).
- Pub/sub: PUBLISH on a cluster reaches every node, so a plain connection to any
  reachable node subscribes; when that node goes away the subscription fails (the
  caller's supervisor listens again) and the next one starts from the next node.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

# how long an official write waits for its master's replica to have it, and how long a
# master whose replica did not answer is written to without waiting
REPLICA_WAIT_MS = 500
REPLICA_RECHECK_S = 10.0
# a subscription's node that answers nothing (not even a PING) for this long is left
SILENT_NODE_S = 3.0

# one operation of a pipeline: queues its command(s) on the pipeline it is given (sync)
Op = Callable[[Any], Any]

_next_node = itertools.count()


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


@dataclass
class Replication:
    """Official writes are answered once the master of their slot has passed them to a
    replica (WAIT 1): a failover promotes that replica, so it keeps what was answered.
    A master that has no replica (its replica died or was promoted) would make every
    WAIT last its whole timeout: after one WAIT that no replica answered, that master's
    writes go without waiting for ``recheck_s``, then it is asked again."""

    wait_ms: int = REPLICA_WAIT_MS
    recheck_s: float = REPLICA_RECHECK_S
    _alone_until: dict[str, float] = field(default_factory=dict)  # node name -> monotonic

    async def waits(self, client: RedisCluster, keys: Sequence[str]) -> list[tuple[str, Op]]:
        """A WAIT per master of ``keys`` (covering the writes sent before it on its
        connection: a pipeline sends a master's commands on one connection, in order)."""
        if not keys:
            return []
        await client.initialize()
        now_s = time.monotonic()
        masters: dict[str, Any] = {}
        for key in keys:
            with contextlib.suppress(redis.exceptions.RedisClusterException):
                node = client.get_node_from_key(key)
                if node is not None and self._alone_until.get(node.name, 0.0) <= now_s:
                    masters[node.name] = node
        return [
            (name, functools.partial(_wait, node=node, timeout_ms=self.wait_ms))
            for name, node in masters.items()
        ]

    def answered(self, names: Sequence[str], results: Sequence[Any]) -> None:
        for name, acked in zip(names, results, strict=False):
            if isinstance(acked, int) and acked < 1:
                self._alone_until[name] = time.monotonic() + self.recheck_s
            elif isinstance(acked, int):
                self._alone_until.pop(name, None)


def _wait(pipe: Any, node: Any, timeout_ms: int) -> None:
    pipe.execute_command("WAIT", 1, timeout_ms, target_nodes=node)


async def pipelined(
    client: RedisCluster,
    ops: Sequence[Op],
    scripts: Sequence[AsyncScript],
    replicated: Sequence[str] = (),
    replication: Replication | None = None,
) -> list[Any]:
    """Results of ``ops`` run in one cluster pipeline (one batch per master); raises the
    first error, as a plain pipeline does. With ``replicated`` keys and a
    ``replication``, the call returns once each key's master passed the writes to a
    replica (see ``Replication``)."""
    waits = await replication.waits(client, replicated) if replication is not None else []
    names, wait_ops = [n for n, _ in waits], [op for _, op in waits]
    done = await _run(client, [*ops, *wait_ops])
    results, acked = done[: len(ops)], done[len(ops) :]
    missing = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing:
        await load_scripts(client, scripts)
        again = await _run(client, [*(ops[i] for i in missing), *wait_ops])
        for i, r in zip(missing, again, strict=False):
            results[i] = r
        acked = again[len(missing) :]
    if replication is not None:
        replication.answered(names, acked)
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


async def load_scripts(client: RedisCluster, scripts: Sequence[AsyncScript]) -> None:
    """Load ``scripts`` on every node the client knows, one by one: redis-py's own
    SCRIPT LOAD goes to the nodes it calls primaries, and a replica promoted meanwhile
    may still be known as a replica (its NOSCRIPT would then never end). A node that
    does not answer (the dead master) is skipped."""
    for node in client.get_nodes():
        for script in scripts:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await client.execute_command("SCRIPT LOAD", script.script, target_nodes=node)


async def evalsha(
    client: RedisCluster,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    scripts: Sequence[AsyncScript],
) -> Any:
    """``script`` run by SHA on its keys' master, loaded first where it is missing."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]
    except redis.exceptions.NoScriptError:
        await load_scripts(client, scripts)
        return await client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]


async def _run(client: RedisCluster, ops: Sequence[Op]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    try:
        for op in ops:
            op(pipe)  # queues (a cluster pipeline is awaitable: awaiting it would reset)
        return list(await pipe.execute(raise_on_error=False))
    finally:
        await pipe.reset()  # type: ignore[no-untyped-call]


async def subscribe(
    client: RedisCluster, channels: Sequence[str]
) -> tuple[aioredis.Redis, aioredis.client.PubSub]:
    """A plain client to one reachable node of the cluster and its pub/sub subscribed to
    ``channels`` (the subscription is not confirmed yet: read the replies)."""
    await client.initialize()
    nodes = client.get_nodes()
    if not nodes:
        raise redis.exceptions.ConnectionError("no Redis Cluster node known")
    start = next(_next_node)
    error: Exception | None = None
    for i in range(len(nodes)):
        node = nodes[(start + i) % len(nodes)]
        kwargs = {
            k: v
            for k, v in node.connection_kwargs.items()
            if k not in ("retry", "redis_connect_func", "response_callbacks")
        }
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=1, **kwargs
        )
        plain = aioredis.Redis.from_pool(pool)
        pubsub = plain.pubsub()
        try:
            await pubsub.subscribe(*channels)
            return plain, pubsub
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            error = e
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await plain.aclose()
    assert error is not None
    raise error


@dataclass
class NodeWatch:
    """A subscription's node must answer: after a silent poll it is PINGed (its PONG is
    heard like a message), and with the PING unanswered for ``SILENT_NODE_S`` it is
    given up (TimeoutError). A stopped node (SIGSTOP, a hung host) keeps its socket
    open and sends nothing, while any other node would deliver every message. Only an
    unanswered question counts: an event loop busy for a while gives up nothing."""

    asked_s: float | None = None

    async def polled(self, pubsub: aioredis.client.PubSub, heard: bool) -> None:
        if heard:
            self.asked_s = None
        elif self.asked_s is None:
            await pubsub.ping()
            self.asked_s = time.monotonic()
        elif time.monotonic() - self.asked_s > SILENT_NODE_S:
            raise redis.exceptions.TimeoutError(
                f"the Redis Cluster node of the subscription did not answer a PING within "
                f"{SILENT_NODE_S:.0f} s"
            )
