"""Fenced writes: what a leased worker stores, only while the symbol is still its own.

``write_live_fenced`` stores a flush of live keys only for the symbols whose stored lease
epoch is still the writer's (WATCH on the epoch keys, then the writes in one MULTI/EXEC:
a worker paused past its TTL, whose symbol another worker took meanwhile, has its writes
refused); ``FencedStore`` does the same for official rows. On a cluster, where no WATCH
spans slots, each key is written by a script that checks the fence of its own slot
(raised by a new owner when it takes the symbol: ``Leases.acquire``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.exceptions

from livecandle.domain.model import SeriesKey
from livecandle.store import cluster, scripts
from livecandle.store.keys import LIVE_PRICE_TTL_MS, live_candle_ttl_ms
from livecandle.store.leases import RESUME_TTL_MS, Resume, _eval_op
from livecandle.store.store import (
    ANY_OPEN_MS,
    ClosedLive,
    LiveWrite,
    OfficialWrite,
    Rows,
    Store,
    WriteResult,
    _write_result,
)


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
                store._write_closed_many(pipe, live_closed)
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
    whose: list[tuple[str, int]] = []  # each op's symbol, and its answer when refused
    by_series: dict[SeriesKey, list[ClosedLive]] = {}
    for c in live_closed:
        by_series.setdefault(c.series, []).append(c)
    for series, items in by_series.items():
        for keys, args in store._closed_writes(items):
            script, fence = scripts.FENCED_WRITE_LIVE_CLOSED, k.fence(keys[0])
            ops.append(_eval_op(script, [*keys, fence], [*args, epochs[series.symbol]]))
            whose.append((series.symbol, -1))
    for w in live:
        key, ttl_ms = k.live_candle(w.series), live_candle_ttl_ms(w.series.interval)
        args = [w.value, ttl_ms, epochs[w.series.symbol]]
        ops.append(_eval_op(scripts.FENCED_SET, [key, k.fence(key)], args))
        whose.append((w.series.symbol, -1))
    for symbol, value in live_prices:
        key = k.live_price(symbol)
        args = [value, LIVE_PRICE_TTL_MS, epochs[symbol]]
        ops.append(_eval_op(scripts.FENCED_SET, [key, k.fence(key)], args))
        whose.append((symbol, -1))
    for symbol, r in resume.items():
        if symbol not in refused:
            keys = [k.lease_epoch(symbol), k.live_resume(symbol)]
            ops.append(_eval_op(scripts.RESUME_SET, keys, [r.epoch, r.encode(), RESUME_TTL_MS]))
            whose.append((symbol, 0))
    if ops:
        done = await cluster.pipelined(store.redis, ops, ())  # type: ignore[arg-type]
        refused |= {s for (s, no), r in zip(whose, done, strict=True) if r == no}
    publishes = [_publish_op(k.closed_channel, message) for message in closed]
    if publish is not None and not refused:
        publishes.append(_publish_op(k.live_channel, publish))
    if publishes:
        await cluster.pipelined(store.redis, publishes, ())  # type: ignore[arg-type]
    return refused


def _publish_op(channel: str, message: bytes) -> cluster.Op:
    # by name: redis-py's cluster client has no publish method
    return lambda pipe: pipe.execute_command("PUBLISH", channel, message)


async def _check_on_cluster(
    store: Store, symbols: Sequence[str], epochs: Mapping[str, int]
) -> set[str]:
    ops = [_fence_op(store.keys.lease_epoch(s), epochs[s]) for s in symbols]
    found = await cluster.pipelined(store.redis, ops, ())  # type: ignore[arg-type]
    return {s for s, bad in zip(symbols, found, strict=True) if bad}


def _fence_op(key: str, epoch: int) -> cluster.Op:
    return lambda pipe: pipe.execute_command("EVAL", scripts.FENCE_CHECK, 1, key, epoch)


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
        rows: Rows,
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
