"""Symbol leases in Redis: one owner per symbol, renewed, fenced by an epoch.

A lease is ``SET lease:SYM <worker> NX PX ttl`` plus Lua compare-and-renew and
compare-and-release with the worker id as the token (``scripts.LEASE_*``). Each
acquisition INCRs the symbol's ``lease_epoch``: the epoch a worker took the symbol at is
the fence its writes carry (``store.fencing``). The workers say they are alive in one
ZSET (expiry by Redis time), which is how a worker counts its fair share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from livecandle.domain.intervals import Interval
from livecandle.domain.model import SeriesKey
from livecandle.store import cluster, scripts
from livecandle.store.keys import LIVE_CANDLE_MIN_TTL_MS
from livecandle.store.store import (
    Store,
)

_json = msgspec.json.Encoder()
RESUME_TTL_MS = LIVE_CANDLE_MIN_TTL_MS


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the stored live candles of a symbol stand: the last aggregate trade id and
    individual trade id they include (-1: none yet), who wrote them at which epoch, and
    for each interval the ``(open_ms, trades)`` of the forming candle written with it. A
    new owner trusts a stored candle only if it is that one: on a cluster the candles and
    the resume point live in different slots, and a worker killed between their writes
    leaves one of them behind the other."""

    agg_id: int
    trade_id: int
    epoch: int = 0
    worker: str = ""
    candles: dict[str, tuple[int, int]] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _json.encode(
            {
                "agg_id": self.agg_id,
                "trade_id": self.trade_id,
                "epoch": self.epoch,
                "worker": self.worker,
                "candles": self.candles,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Resume:
        d = msgspec.json.decode(raw)
        candles = {k: (int(v[0]), int(v[1])) for k, v in d.get("candles", {}).items()}
        return cls(int(d["agg_id"]), int(d["trade_id"]), int(d["epoch"]), str(d["worker"]), candles)


class Leases:
    """The lease operations of one worker (``worker`` is its token) on a ``Store``."""

    def __init__(self, store: Store, worker: str, intervals: Sequence[Interval] = ()) -> None:
        self.store = store
        self.keys = store.keys
        self.worker = worker
        self.intervals = tuple(intervals)  # on a cluster: the series whose fences it raises
        redis = store.redis
        self._acquire = redis.register_script(scripts.LEASE_ACQUIRE)
        self._renew = redis.register_script(scripts.LEASE_RENEW)
        self._release = redis.register_script(scripts.LEASE_RELEASE)
        self._beat = redis.register_script(scripts.WORKERS_BEAT)
        self._all = [self._acquire, self._renew, self._release, self._beat]

    async def _each(self, script: Any, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """``script`` once per ``(keys, args)``, pipelined (on a cluster: by SHA, one batch
        per master, the scripts loaded again on a master that lacks them)."""
        if self.store.keys.cluster and cluster.is_cluster(self.store.redis):
            ops = [_by_sha(script, keys, args) for keys, args in calls]
            return await cluster.pipelined(self.store.redis, ops, self._all)  # type: ignore[arg-type]
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=keys, args=args, client=pipe)
            return await pipe.execute()

    async def beat(self, ttl_ms: int, stats: Mapping[str, Any] | None = None) -> list[str]:
        """Register this worker alive for ``ttl_ms`` (0: leaving) and list the living."""
        (found,) = await self._each(self._beat, [([self.keys.workers], [self.worker, ttl_ms])])
        if stats is not None and ttl_ms > 0:
            await self.store.redis.set(
                self.keys.worker(self.worker), _json.encode(dict(stats)), px=ttl_ms
            )
        return sorted(w.decode() for w in found)

    async def worker_stats(self, worker: str) -> dict[str, Any] | None:
        raw = await self.store.redis.get(self.keys.worker(worker))
        return None if raw is None else cast(dict[str, Any], msgspec.json.decode(raw))

    async def acquire(self, symbols: Sequence[str], ttl_ms: int) -> dict[str, int]:
        """Try each symbol's lease; the epoch of each one now ours."""
        if not symbols:
            return {}
        k = self.keys
        got = await self._each(
            self._acquire,
            [([k.lease(s), k.lease_epoch(s)], [self.worker, ttl_ms]) for s in symbols],
        )
        taken = {s: int(e) for s, e in zip(symbols, got, strict=True) if int(e) > 0}
        if taken and cluster.is_cluster(self.store.redis):
            await self._raise_fences(taken)
        return taken

    async def _raise_fences(self, taken: Mapping[str, int]) -> None:
        """On a cluster, before anything of a symbol taken is read or written: the fence
        of each slot its keys live in, raised to the new epoch (a paused worker's flush
        already past its epoch check is then refused there)."""
        k = self.keys
        ops = []
        for s, epoch in taken.items():
            keys = [k.live_candle(SeriesKey(s, i)) for i in self.intervals]
            for key in [*keys, k.live_price(s)]:
                ops.append(_eval_op(scripts.FENCE_RAISE, [k.fence(key)], [epoch]))
        await cluster.pipelined(self.store.redis, ops, ())  # type: ignore[arg-type]

    async def renew(self, epochs: Mapping[str, int], ttl_ms: int) -> set[str]:
        """Renew the given leases; the symbols whose lease was lost."""
        if not epochs:
            return set()
        k = self.keys
        symbols = list(epochs)
        kept = await self._each(
            self._renew,
            [([k.lease(s), k.lease_epoch(s)], [self.worker, ttl_ms, epochs[s]]) for s in symbols],
        )
        return {s for s, ok in zip(symbols, kept, strict=True) if not int(ok)}

    async def release(self, symbols: Iterable[str]) -> int:
        """Give the leases up at once (a clean stop, or a surplus handed on)."""
        symbols = list(symbols)
        if not symbols:
            return 0
        done = await self._each(
            self._release, [([self.keys.lease(s)], [self.worker]) for s in symbols]
        )
        return sum(int(r) for r in done)

    async def owners(self, symbols: Sequence[str]) -> dict[str, str | None]:
        """The worker owning each symbol now (None: nobody)."""
        return await lease_owners(self.store, symbols)

    async def live_candles(
        self, symbols: Sequence[str], intervals: Sequence[Interval]
    ) -> dict[SeriesKey, bytes]:
        """The stored live candle of each series of ``symbols`` that has one, in one round
        trip (a worker taking many symbols at once must not spend its renewal period)."""
        series = [SeriesKey(s, i) for s in symbols for i in intervals]
        found = await _gets(self.store, [self.keys.live_candle(x) for x in series])
        return {x: v for x, v in zip(series, found, strict=True) if v is not None}

    async def resume_points(self, symbols: Sequence[str]) -> dict[str, Resume]:
        """The stored resume point of each symbol that has one."""
        if not symbols:
            return {}
        found = await _gets(self.store, [self.keys.live_resume(s) for s in symbols])
        return {s: Resume.decode(v) for s, v in zip(symbols, found, strict=True) if v}


def _eval_op(script: str, keys: list[str], args: list[Any]) -> cluster.Op:
    return lambda pipe: pipe.execute_command("EVAL", script, len(keys), *keys, *args)


def _get_op(key: str) -> cluster.Op:
    return lambda pipe: pipe.get(key)


async def _gets(store: Store, keys: Sequence[str]) -> list[Any]:
    """GET of each key in one round trip (on a cluster: one batch per master)."""
    if cluster.is_cluster(store.redis):
        return await cluster.pipelined(store.redis, [_get_op(k) for k in keys], ())  # type: ignore[arg-type]
    async with store.redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.get(k)
        return await pipe.execute()


def _by_sha(script: Any, keys: list[str], args: list[Any]) -> cluster.Op:
    # redis-py's cluster pipeline refuses Script calls: EVALSHA, loaded again on NOSCRIPT
    return lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def lease_owners(store: Store, symbols: Sequence[str]) -> dict[str, str | None]:
    """The worker owning each symbol now (None: nobody), for ``/api/symbols``."""
    if not symbols:
        return {}
    found = await _gets(store, [store.keys.lease(s) for s in symbols])
    return {s: (v.decode() if v else None) for s, v in zip(symbols, found, strict=True)}


async def lease_workers(store: Store) -> dict[str, Any]:
    """The living workers and what each owns, for ``/healthz`` (empty without leases)."""
    k = store.keys
    found = await store.redis.zrange(k.workers, 0, -1)
    names = sorted(w.decode() for w in found)
    if not names:
        return {}
    raws = await _gets(store, [k.worker(w) for w in names])
    workers = {w: (msgspec.json.decode(r) if r else None) for w, r in zip(names, raws, strict=True)}
    return {"workers": workers, "owned": sum((s or {}).get("owned", 0) for s in workers.values())}
