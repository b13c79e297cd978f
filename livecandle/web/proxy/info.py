"""The exchange's own ``/api/v3/exchangeInfo``, kept in Redis and served with Binance's
parameters for every symbol of the exchange.

One process reads it from the exchange (weight 20, ``Priority.RECONCILE``) when the
stored copy is older than ``period_s`` (so many web processes cost one reading per
period) or when a symbol's status changed (``stale``); every process serves its own
decoded copy of the stored one, re-read from Redis at most once a second. Each symbol's
object is encoded once per copy, so the whole market's answer is a join of bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from livecandle.domain.universe import DELISTED, SymbolEntry
from livecandle.exchange.binance import exchange_info as shared
from livecandle.exchange.binance.rest import BinanceError, BinanceRest, BinanceUnavailable
from livecandle.exchange.binance.weights import Priority
from livecandle.store import Store, StoreError

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()
REDIS_READ_S = 1.0  # a copy read from Redis is served this long before looking again
STATUS_RECHECK_S = 10.0  # a status change forces a new reading at most this often


class Unavailable(Exception):
    """No copy of exchangeInfo yet (the exchange cannot be read, none is stored)."""


class _Copy:
    """One exchangeInfo body, decoded once: the head, each symbol's bytes and status."""

    def __init__(self, body: bytes, fetched_ms: int) -> None:
        self.fetched_ms = fetched_ms
        doc: dict[str, Any] = msgspec.json.decode(body)
        symbols: list[dict[str, Any]] = doc.pop("symbols", [])
        self.head = doc
        self.objects = {s["symbol"]: s for s in symbols if isinstance(s.get("symbol"), str)}
        self.statuses = {n: str(s.get("status", "")) for n, s in self.objects.items()}
        self.permissions = {
            n: {p for group in s.get("permissionSets") or [] for p in group}
            | set(s.get("permissions") or [])
            for n, s in self.objects.items()
        }
        self._encoded: dict[tuple[str, bool], bytes] = {}

    def symbol_bytes(self, name: str, permission_sets: bool) -> bytes:
        key = (name, permission_sets)
        cached = self._encoded.get(key)
        if cached is None:
            obj = self.objects[name]
            if not permission_sets and "permissionSets" in obj:
                obj = {**obj, "permissionSets": []}
            cached = self._encoded[key] = _json.encode(obj)
        return cached


class ExchangeInfoKeeper:
    def __init__(
        self,
        store: Store,
        rest: BinanceRest | None,
        now_ms: Callable[[], int],
        period_s: float = 60.0,
        known: Callable[[], Mapping[str, SymbolEntry]] | None = None,
        first_wait_s: float = 3.0,
        recheck_s: float = REDIS_READ_S,
    ) -> None:
        self.store = store
        self.rest = rest
        self.now_ms = now_ms
        self.period_s = period_s
        self.known = known  # the stored universe as this process read it last
        self.fetches = 0
        self._forced_s = 0.0
        self._forced_for: set[tuple[str, str]] = set()  # disagreements already read for
        self.status_recheck_s = STATUS_RECHECK_S
        self.first_wait_s = first_wait_s
        self.recheck_s = recheck_s  # a copy is served this long before looking again
        self._retry_s = 0.0  # no new first reading is waited for before this
        self._pending: asyncio.Task[None] | None = None
        self._copy: _Copy | None = None
        self._read_s = 0.0
        self._stale = False
        self._lock = asyncio.Lock()

    def stale(self) -> None:
        """A symbol's status changed: read the exchange's copy again at the next use."""
        self._stale = True

    async def refresh(self, force: bool = False) -> None:
        """Read the exchange's exchangeInfo and store it, unless the stored one is
        younger than ``period_s`` (another process read it) and nothing changed."""
        async with self._lock:
            stored_ms = await self.store.exchange_info_fetched_ms()
            fresh = stored_ms is not None and self.now_ms() - stored_ms < self.period_s * 1000
            if self.rest is None or (fresh and not force and not self._stale):
                if stored_ms is not None and (
                    self._copy is None or self._copy.fetched_ms != stored_ms
                ):
                    stored = await self.store.exchange_info()
                    if stored is not None:
                        self._adopt(*stored)
                self._read_s = time.monotonic()
                return
            self._stale = False
            body = await self.rest.get("/api/v3/exchangeInfo", priority=Priority.RECONCILE)
            self.fetches += 1
            fetched_ms = self.now_ms()
            await self.store.write_exchange_info(body, fetched_ms)
            self._adopt(body, fetched_ms)

    def _adopt(self, body: bytes, fetched_ms: int) -> None:
        if self._copy is None or self._copy.fetched_ms != fetched_ms:
            self._copy = _Copy(body, fetched_ms)
        self._read_s = time.monotonic()

    async def _refresh_or_keep(self) -> None:
        """``refresh``; when the exchange cannot be read, the copy held is served on."""
        try:
            await self.refresh()
        except (BinanceError, BinanceUnavailable, StoreError) as e:
            log.warning("cannot refresh the stored exchangeInfo: %s", e)

    def _disagrees(self, c: _Copy) -> bool:
        """The universe saw a status change (or a listing) the copy does not have. Each
        disagreement forces one reading only: a universe nobody updates any more (no
        process follows the listing) must not cost a reading every few seconds."""
        if self.known is None or time.monotonic() - self._forced_s < self.status_recheck_s:
            return False
        for name, entry in self.known().items():
            seen = (name, entry.status)
            if c.statuses.get(name, DELISTED) != entry.status and seen not in self._forced_for:
                if len(self._forced_for) > 10_000:
                    self._forced_for.clear()
                self._forced_for.add(seen)
                self._forced_s = time.monotonic()
                return True
        return False

    def _refresh_soon(self) -> asyncio.Task[None]:
        """One refresh at a time, in the background: a slow exchange never holds a
        request that has a copy to serve."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._refresh_or_keep())
        return self._pending

    async def settled(self) -> None:
        """Until the background refresh under way (if any) is done."""
        if self._pending is not None:
            await asyncio.shield(self._pending)

    async def copy(self) -> _Copy:
        """The current copy (re-checked in the background once a second: Redis's when
        another process read a newer one, the exchange's when it is ``period_s`` old or
        the universe saw a status change it does not have). With none yet, the first
        reading is waited for up to ``first_wait_s``; ``Unavailable`` after that."""
        c = self._copy
        if c is None:
            if time.monotonic() < self._retry_s:
                raise Unavailable("no exchangeInfo yet")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._refresh_soon()), self.first_wait_s)
            if self._copy is None:
                self._retry_s = time.monotonic() + self.first_wait_s
                raise Unavailable("the exchange's exchangeInfo cannot be read")
            return self._copy
        if self._stale or time.monotonic() - self._read_s > self.recheck_s:
            if self._disagrees(c):
                self._stale = True
            self._read_s = time.monotonic()
            self._refresh_soon()
        return c

    def held_statuses(self) -> Mapping[str, str] | None:
        """The statuses of the copy held now, without waiting (None: none yet)."""
        return self._copy.statuses if self._copy is not None else None

    async def statuses(self) -> Mapping[str, str]:
        """Every symbol of the exchange and its status."""
        return (await self.copy()).statuses

    async def body(self, q: Mapping[str, str]) -> bytes:
        c = await self.copy()
        names = shared.select(q, c.statuses, c.permissions)
        perms = shared.show_permission_sets(q)
        head = {**c.head, "serverTime": self.now_ms()}
        return shared.join(head, (c.symbol_bytes(n, perms) for n in names))
