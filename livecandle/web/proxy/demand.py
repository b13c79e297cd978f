"""Wishes: the proxy's side of "any symbol on demand". A request for a symbol that is
not followed (or is followed on demand) is a wish, sent to Redis (``store.demand``) for
the universe followers to admit up to the cap. Cheap on the request path: a wish is a
set insert, written at most once per symbol per ``every_s``, in one batch a second, by
a task no answer waits for. Only symbols the exchange lists as TRADING are wished for
(an unknown symbol is never wanted), so the pending set is bounded by the listing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from livecandle.domain.universe import IDLE, ON_DEMAND, TRADING
from livecandle.store import Store, StoreError
from livecandle.store.demand import DemandStore
from livecandle.web.params import Served
from livecandle.web.proxy.info import Unavailable

log = logging.getLogger(__name__)

FLUSH_S = 1.0  # wishes are batched this long
MAX_PENDING = 1024  # wishes not yet checked against the listing (none read yet)


class Wishes:
    def __init__(
        self,
        store: Store,
        served: Served,
        known: Callable[[], Mapping[str, str] | None],
        statuses: Callable[[], Awaitable[Mapping[str, str]]],
        now_ms: Callable[[], int],
        cap: int,
        every_s: float = 10.0,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.demand = DemandStore(store)
        self.served = served
        self.known = known  # the exchange's statuses as held now (None: none read yet)
        self.statuses = statuses  # ... read when needed
        self.now_ms = now_ms
        self.cap = cap
        self.every_s = every_s
        self.flush_s = flush_s
        self.sent = 0  # wishes written to Redis
        self._last: dict[str, float] = {}  # symbol -> when last wished (monotonic s)
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def asked(self, symbols: Iterable[str]) -> None:
        """Clients asked for ``symbols`` (by a proxy request that names them)."""
        if self.cap <= 0:
            return
        known = self.known()
        now_s = time.monotonic()
        for symbol in symbols:
            if self.served.knows(symbol):
                entry = self.served.entries.get(symbol)
                if entry is None or entry.demand != ON_DEMAND:
                    continue  # followed by the configuration: no demand needed
            if now_s - self._last.get(symbol, -1e18) < self.every_s:
                continue
            if known is not None:
                if known.get(symbol) != TRADING:
                    continue  # unknown or not trading: never wanted
                self._last[symbol] = now_s
            elif len(self._pending) >= MAX_PENDING:
                continue
            self._pending.add(symbol)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.flush_s)
        try:
            await self.flush()
        except Unavailable:  # no listing to check the wishes against: asked again later
            pass
        except Exception:  # a wish lost is asked again by the next request
            log.exception("cannot send the symbols wanted on demand")

    async def flush(self) -> None:
        pending, self._pending = self._pending, set()
        statuses = await self.statuses()
        now_s = time.monotonic()
        names = sorted(s for s in pending if statuses.get(s) == TRADING)
        for s in names:
            self._last[s] = now_s
        if len(self._last) > 2 * len(statuses) + MAX_PENDING:  # never more than the listing
            self._last = {s: t for s, t in self._last.items() if now_s - t < self.every_s}
        try:
            await self.demand.want(names, self.now_ms())
        except StoreError as e:
            for s in names:  # wished again by the next request
                self._last.pop(s, None)
            if not self._failing:
                log.warning("cannot write the symbols wanted on demand: %s", e)
            self._failing = True
            return
        self._failing = False
        self.sent += len(names)

    def stats(self) -> dict[str, Any]:
        """For /healthz: symbols followed on demand (as the stored universe says) and the cap."""
        entries = self.served.entries.values()
        followed = [e for e in entries if e.demand == ON_DEMAND and e.followed]
        return {
            "followed": len(followed),
            "warm": sum(1 for e in followed if e.warm_ms),
            "idle": sum(1 for e in entries if e.demand == IDLE),
            "cap": self.cap,
            "wishes_sent": self.sent,
        }
