"""DueHeap: keys (series) due at times, for schedulers that serve thousands of them
from one task: scheduling a key again supersedes its earlier time."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DueHeap(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, K]] = []
        self._due: dict[K, int] = {}  # the one current time of each key
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def due_ms(self, key: K) -> int | None:
        return self._due.get(key)

    def schedule(self, key: K, due_ms: int) -> None:
        self._due[key] = due_ms
        heapq.heappush(self._heap, (due_ms, next(self._seq), key))
        if self._heap[0][2] == key:
            self._wake.set()  # earlier than what the waiter waits for

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    def next_ms(self) -> int | None:
        """The earliest due time."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop(self, key: K) -> None:
        """Take ``key`` out (it is being served)."""
        del self._due[key]

    def pop_first(self, now_ms: int) -> K | None:
        """The earliest key if it is due by ``now_ms``, taken out."""
        first = self.next_ms()
        if first is None or first > now_ms:
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._due[key]
        return key

    def pop_due(self, now_ms: int) -> list[K]:
        """Every key due by ``now_ms``, earliest first, taken out."""
        out = []
        while (key := self.pop_first(now_ms)) is not None:
            out.append(key)
        return out

    async def wait(self, now_ms: int, cap_s: float = 60.0) -> None:
        """Sleep until the earliest due time (at most ``cap_s``) or until a key is
        scheduled earlier."""
        first = self.next_ms()
        wait_s = cap_s if first is None else min(cap_s, (first - now_ms) / 1000)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.001, wait_s)):
                await self._wake.wait()
