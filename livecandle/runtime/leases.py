"""LeaseManager: which of the followed symbols this worker owns (``LIVECANDLE_LEASES=1``).

Every ``period`` (a third of the lease TTL) the worker says it is alive, renews its
leases, and counts its fair share: ``ceil(symbols / living workers)``. Below it, it takes
free symbols (in its own random order, after a random delay: workers starting together
do not all go for the same keys at once); above it (a worker joined), it hands a few
surplus symbols on per round, so the new worker takes them over gradually, not in one
storm. A clean stop releases every lease at once; a killed worker's leases expire after
the TTL and the others take them. ``on_change`` starts following the symbols taken (with
their stored resume points) and stops following the ones lost or handed on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from livecandle.store import StoreError
from livecandle.store.leases import Leases, Resume

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 10_000
# a worker above its share hands on at most this share of it per round
HAND_ON_SHARE = 0.25

# (symbols taken with their resume points, symbols no longer owned)
OnChange = Callable[[dict[str, Resume | None], set[str]], Awaitable[None]]


def worker_id() -> str:
    """A token unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaseManager:
    def __init__(
        self,
        leases: Leases,
        on_change: OnChange,
        ttl_ms: int = DEFAULT_TTL_MS,
    ) -> None:
        self.leases = leases
        self.worker = leases.worker
        self.on_change = on_change
        self.ttl_ms = ttl_ms
        self.period_s = ttl_ms / 3000
        self.candidates: set[str] = set()  # the symbols the universe follows
        self.owned: dict[str, int] = {}  # symbol -> epoch
        self.workers: list[str] = []
        self.share = 0
        self.acquired = 0
        self.lost = 0
        self.handed_on = 0
        self.refused_writes = 0  # writes the store refused: a newer epoch owns the symbol
        self.last_error: str | None = None
        self._changed = asyncio.Event()
        self._stopped = False

    def epoch_of(self, symbol: str) -> int | None:
        return self.owned.get(symbol)

    def set_candidates(self, symbols: Iterable[str]) -> None:
        self.candidates = set(symbols)
        self._changed.set()

    def follow(self, follow: Iterable[str], stop: Iterable[str]) -> None:
        """A change of the universe: symbols to consider, symbols gone."""
        self.candidates |= set(follow)
        self.candidates -= set(stop)
        self._changed.set()

    async def refused(self, symbols: set[str]) -> None:
        """The store refused writes of these symbols: another worker owns them now."""
        self.refused_writes += len(symbols)
        gone = symbols & set(self.owned)
        if gone:
            log.warning("lease of %d symbols taken over by another worker", len(gone))
            for s in gone:
                del self.owned[s]
            self.lost += len(gone)
            await self.on_change({}, gone)

    async def run(self) -> None:
        # say it is alive first, then wait a little: workers started together see each
        # other before taking anything (each its share, not all for one that hands on)
        try:
            await self.leases.beat(self.ttl_ms, self.stats())
        except StoreError as e:
            self.last_error = f"{type(e).__name__}: {e}"
        await asyncio.sleep(random.uniform(self.period_s / 2, self.period_s))
        while not self._stopped:
            started = time.monotonic()
            try:
                await self.round()
                self.last_error = None
            except StoreError as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("lease round failed: %s", self.last_error)
            self._changed.clear()
            wait_s = max(0.0, self.period_s - (time.monotonic() - started))
            try:  # a universe change is looked at sooner
                await asyncio.wait_for(self._changed.wait(), wait_s)
                await asyncio.sleep(random.uniform(0, self.period_s / 4))
            except TimeoutError:
                pass

    async def round(self) -> None:
        """One round: beat, renew, then take up to the share or hand the surplus on; the
        worker's stats (``/healthz``) as they are after it."""
        self.workers = await self.leases.beat(self.ttl_ms)
        try:
            await self._round()
        finally:
            await self.leases.beat(self.ttl_ms, self.stats())

    async def _round(self) -> None:
        leases = self.leases
        lost = await leases.renew(self.owned, self.ttl_ms)
        gone = lost | (set(self.owned) - self.candidates)
        if gone - lost:
            await leases.release(gone - lost)
        for s in gone:
            self.owned.pop(s, None)
        if lost:
            self.lost += len(lost)
            log.warning("lost the lease of %d symbols (expired or taken)", len(lost))
        if gone:
            await self.on_change({}, gone)
        self.share = math.ceil(len(self.candidates) / max(1, len(self.workers)))
        surplus = len(self.owned) - self.share
        if surplus > 0:
            n = min(surplus, max(1, math.ceil(self.share * HAND_ON_SHARE)))
            give = set(random.sample(sorted(self.owned), n))
            for s in give:
                del self.owned[s]
            await self.on_change({}, give)  # stop writing before the next owner starts
            await leases.release(give)
            self.handed_on += n
            return
        want = self.share - len(self.owned)
        if want <= 0:
            return
        others = sorted(self.candidates - set(self.owned))
        owners = await leases.owners(others)
        free = [s for s, w in owners.items() if w is None]
        random.shuffle(free)
        taken = await leases.acquire(free[:want], self.ttl_ms)
        if not taken:
            return
        self.owned.update(taken)
        self.acquired += len(taken)
        points = await leases.resume_points(list(taken))
        await self.on_change({s: points.get(s) for s in taken}, set())

    async def stop(self) -> None:
        """Release every lease at once and leave the workers' list."""
        self._stopped = True
        owned, self.owned = list(self.owned), {}
        try:
            await self.leases.release(owned)
            await self.leases.beat(0)
        except StoreError as e:  # they expire after the TTL
            log.warning("cannot release the leases (%s): they expire in %d ms", e, self.ttl_ms)

    def stats(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "ttl_ms": self.ttl_ms,
            "workers": len(self.workers),
            "share": self.share,
            "owned": len(self.owned),
            "candidates": len(self.candidates),
            "acquired": self.acquired,
            "lost": self.lost,
            "handed_on": self.handed_on,
            "refused_writes": self.refused_writes,
            "error": self.last_error,
        }
