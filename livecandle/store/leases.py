"""Symbol leases in Redis: one owner per symbol, renewed, fenced by an epoch.

A lease is ``SET lease:SYM <worker> NX PX ttl`` plus Lua compare-and-renew and
compare-and-release with the worker id as the token (``scripts.LEASE_*``). Each
acquisition INCRs the symbol's ``lease_epoch``: the epoch a worker took the symbol at is
the fence its writes carry. ``write_live_fenced`` stores a flush of live keys only for
the symbols whose stored epoch is still the writer's (WATCH on the epoch keys, then the
writes in one MULTI/EXEC: a worker paused past its TTL, whose symbol another worker took
meanwhile, has its writes refused). The workers say they are alive in one ZSET (expiry
by Redis time), which is how a worker counts its fair share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import redis.exceptions

from livecandle.domain.intervals import Interval
from livecandle.domain.model import SeriesKey
from livecandle.store import cluster, scripts
from livecandle.store.keys import LIVE_CANDLE_MIN_TTL_MS, LIVE_PRICE_TTL_MS, live_candle_ttl_ms
from livecandle.store.store import (
    ANY_OPEN_MS,
    ClosedLive,
    LiveWrite,
    OfficialWrite,
    Store,
    WriteResult,
    _write_result,
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

    async def resume_points(self, symbols: Sequence[str]) -> dict[str, Resume]:
        """The stored resume point of each symbol that has one."""
        if not symbols:
            return {}
        found = await _gets(self.store, [self.keys.live_resume(s) for s in symbols])
        return {s: Resume.decode(v) for s, v in zip(symbols, found, strict=True) if v}


async def write_live_fenced(
    store: Store,
    epochs: Mapping[str, int],
    resume: Mapping[str, Resume],
    candles: Sequence[LiveWrite],
    prices: Sequence[tuple[str, bytes]] = (),
    publish: bytes | None = None,
    closed: Sequence[bytes] = (),
    closed_candles: Sequence[ClosedLive] = (),
) -> set[str]:
    """``Store.write_live`` of the symbols whose stored lease epoch is the one given in
    ``epochs`` (every symbol written must be in it), with each symbol's resume point, all
    in one transaction; returns the symbols refused (their items were dropped). The batch
    message is published only when nothing was refused (it may carry a refused symbol).
    On a cluster the epoch check is not atomic with the live keys' writes (no WATCH
    across slots): the epochs are checked by ``FENCE_CHECK`` first, and a flush already
    past that check when its worker was paused still lands its live keys; the resume
    point, in the epoch's slot, is stored only at the current epoch (``RESUME_SET``), so
    a new owner never resumes from a stale worker's point."""
    symbols = list(epochs)
    k = store.keys
    epoch_keys = [k.lease_epoch(s) for s in symbols]
    if store.keys.cluster:
        return await _write_live_on_cluster(
            store, epochs, resume, candles, prices, publish, closed, closed_candles
        )
    async with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                if epoch_keys:
                    await pipe.watch(*epoch_keys)
                    stored = await pipe.mget(epoch_keys)
                else:
                    stored = []
                refused = {
                    s
                    for s, v in zip(symbols, stored, strict=True)
                    if v is None or int(v) != epochs[s]
                }
                live, live_prices, live_closed = _without(refused, candles, prices, closed_candles)
                pipe.multi()  # type: ignore[no-untyped-call]
                for keys, args in store._closed_writes(live_closed):
                    pipe.eval(scripts.WRITE_LIVE_CLOSED, len(keys), *keys, *args)
                store._set_live(pipe, live, live_prices)
                for s, r in resume.items():
                    if s not in refused:
                        pipe.set(k.live_resume(s), r.encode(), px=RESUME_TTL_MS)
                if publish is not None and not refused:
                    pipe.publish(k.live_channel, publish)
                for message in closed:
                    pipe.publish(k.closed_channel, message)
                await pipe.execute()
                return refused
            except redis.exceptions.WatchError:  # an epoch moved meanwhile: look again
                continue


def _without(
    refused: set[str],
    candles: Sequence[LiveWrite],
    prices: Sequence[tuple[str, bytes]],
    closed_candles: Sequence[ClosedLive],
) -> tuple[list[LiveWrite], list[tuple[str, bytes]], list[ClosedLive]]:
    if not refused:
        return list(candles), list(prices), list(closed_candles)
    return (
        [w for w in candles if w.series.symbol not in refused],
        [p for p in prices if p[0] not in refused],
        [c for c in closed_candles if c.series.symbol not in refused],
    )


async def _write_live_on_cluster(
    store: Store,
    epochs: Mapping[str, int],
    resume: Mapping[str, Resume],
    candles: Sequence[LiveWrite],
    prices: Sequence[tuple[str, bytes]],
    publish: bytes | None,
    closed: Sequence[bytes],
    closed_candles: Sequence[ClosedLive],
) -> set[str]:
    """Each key written by a script that checks the fence of its slot (raised by a new
    owner at acquisition), one batch per master; the epochs are looked at first so
    that a stale worker's batch is not sent at all, and not published."""
    refused = await _check_on_cluster(store, list(epochs), epochs)
    live, live_prices, live_closed = _without(refused, candles, prices, closed_candles)
    k = store.keys
    ops: list[cluster.Op] = []
    whose: list[str] = []
    by_series: dict[SeriesKey, list[ClosedLive]] = {}
    for c in live_closed:
        by_series.setdefault(c.series, []).append(c)
    for series, items in by_series.items():
        for keys, args in store._closed_writes(items):
            script, fence = scripts.FENCED_WRITE_LIVE_CLOSED, k.fence(keys[0])
            ops.append(_eval_op(script, [*keys, fence], [*args, epochs[series.symbol]]))
            whose.append(series.symbol)
    for w in live:
        key, ttl_ms = k.live_candle(w.series), live_candle_ttl_ms(w.series.interval)
        args = [w.value, ttl_ms, epochs[w.series.symbol]]
        ops.append(_eval_op(scripts.FENCED_SET, [key, k.fence(key)], args))
        whose.append(w.series.symbol)
    for symbol, value in live_prices:
        key = k.live_price(symbol)
        args = [value, LIVE_PRICE_TTL_MS, epochs[symbol]]
        ops.append(_eval_op(scripts.FENCED_SET, [key, k.fence(key)], args))
        whose.append(symbol)
    for symbol, r in resume.items():
        if symbol not in refused:
            keys = [k.lease_epoch(symbol), k.live_resume(symbol)]
            ops.append(_eval_op(scripts.RESUME_SET, keys, [r.epoch, r.encode(), RESUME_TTL_MS]))
            whose.append(symbol)
    if ops:
        done = await cluster.pipelined(store.redis, ops, ())  # type: ignore[arg-type]
        refused |= {s for s, r in zip(whose, done, strict=True) if r in (-1, 0)}
    if publish is not None and not refused:
        await store.redis.publish(k.live_channel, publish)
    for message in closed:
        await store.redis.publish(k.closed_channel, message)
    return refused


def _eval_op(script: str, keys: list[str], args: list[Any]) -> cluster.Op:
    return lambda pipe: pipe.execute_command("EVAL", script, len(keys), *keys, *args)


async def _check_on_cluster(
    store: Store, symbols: Sequence[str], epochs: Mapping[str, int]
) -> set[str]:
    ops = [_fence_op(store.keys.lease_epoch(s), epochs[s]) for s in symbols]
    found = await cluster.pipelined(store.redis, ops, ())  # type: ignore[arg-type]
    return {s for s, bad in zip(symbols, found, strict=True) if bad}


def _fence_op(key: str, epoch: int) -> cluster.Op:
    return lambda pipe: pipe.execute_command("EVAL", scripts.FENCE_CHECK, 1, key, epoch)


async def _set_resume(store: Store, resume: Mapping[str, Resume]) -> set[str]:
    """Each resume point stored if its epoch is still the symbol's (atomically: one slot);
    the symbols refused."""
    if not resume:
        return set()
    k = store.keys
    ops = [
        _resume_op(k.lease_epoch(s), k.live_resume(s), r.epoch, r.encode())
        for s, r in resume.items()
    ]
    done = await cluster.pipelined(store.redis, ops, ())  # type: ignore[arg-type]
    return {s for s, ok in zip(resume, done, strict=True) if not int(ok)}


def _resume_op(epoch_key: str, key: str, epoch: int, value: bytes) -> cluster.Op:
    return lambda pipe: pipe.execute_command(
        "EVAL", scripts.RESUME_SET, 2, epoch_key, key, epoch, value, RESUME_TTL_MS
    )


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


class FencedStore(Store):
    """A ``Store`` whose official writes carry the lease epoch of their symbol (the
    fetcher's and the stream's final candles of a leased worker): a write of a symbol
    this worker does not own, or owns at an older epoch than the stored one, is refused
    (an empty result; ``refused`` counts them). Everything else is ``Store``'s."""

    def __init__(self, store: Store, epoch_of: Callable[[str], int | None]) -> None:
        super().__init__(store.redis, store.keys)
        self.epoch_of = epoch_of
        self.refused = 0

    async def write_candles(
        self,
        series: SeriesKey,
        rows: Sequence[tuple[int, bytes]],
        now_ms: int,
        gaps: Sequence[tuple[int, int]] = (),
        replace_from_ms: int = -ANY_OPEN_MS,
        replace_until_ms: int = ANY_OPEN_MS,
    ) -> WriteResult:
        write = OfficialWrite(series, rows, replace_from_ms, replace_until_ms)
        return (await self._fenced([write], now_ms, gaps))[0]

    async def write_officials(
        self, writes: Sequence[OfficialWrite], now_ms: int
    ) -> list[WriteResult]:
        return await self._fenced(writes, now_ms, ())

    async def _fenced(
        self, writes: Sequence[OfficialWrite], now_ms: int, gaps: Sequence[tuple[int, int]]
    ) -> list[WriteResult]:
        epochs = {w.series.symbol: self.epoch_of(w.series.symbol) for w in writes}
        owned = {s: e for s, e in epochs.items() if e is not None}
        if self._cluster:  # no WATCH across slots: checked first, not atomically
            stale = await _check_on_cluster(self, list(owned), owned)
            kept = [w for w in writes if w.series.symbol in owned and w.series.symbol not in stale]
            ops = []
            for w in kept:
                args = self._write_args(
                    w.series, w.rows, now_ms, gaps, w.replace_from_ms, w.replace_until_ms
                )
                keys = self._write_keys(w.series)
                epoch = owned[w.series.symbol]
                fenced = [*keys, self.keys.fence(keys[0])]
                ops.append(_eval_op(scripts.FENCED_WRITE_CANDLES, fenced, [*args, epoch]))
            replicated = [self.keys.klines(w.series) for w in kept]
            done = iter(await self._pipelined_on_cluster(ops, replicated) if ops else [])
            ids = {id(w) for w in kept}
            out = []
            for w in writes:
                r: Any = next(done) if id(w) in ids else -1
                out.append(self._refuse() if r == -1 else _write_result(r))
            return out
        symbols = list(owned)
        keys = [self.keys.lease_epoch(s) for s in symbols]
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if keys:
                        await pipe.watch(*keys)
                    stored = await pipe.mget(keys) if keys else []
                    live = {
                        s
                        for s, v in zip(symbols, stored, strict=True)
                        if v is not None and int(v) == owned[s]
                    }
                    kept = [w for w in writes if w.series.symbol in live]
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for w in kept:
                        args = self._write_args(
                            w.series, w.rows, now_ms, gaps, w.replace_from_ms, w.replace_until_ms
                        )
                        wkeys = self._write_keys(w.series)
                        pipe.eval(scripts.WRITE_CANDLES, len(wkeys), *wkeys, *args)
                    results = iter(await pipe.execute() if kept else [])
                    break
                except redis.exceptions.WatchError:
                    continue
        return [
            _write_result(next(results)) if w.series.symbol in live else self._refuse()
            for w in writes
        ]

    def _refuse(self) -> WriteResult:
        self.refused += 1
        return WriteResult(0, 0, 0, None, 0)
