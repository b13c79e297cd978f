"""DueHeap: one heap of due times for thousands of series."""

from __future__ import annotations

import asyncio

from livecandle.official.due import DueHeap


def test_keys_come_due_in_time_order_and_a_reschedule_supersedes() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.schedule("a", 30)
    heap.schedule("b", 10)
    heap.schedule("c", 20)
    heap.schedule("a", 5)  # sooner now: the old time no longer counts
    heap.schedule("c", 50)  # later now
    assert heap.pop_due(25) == ["a", "b"]
    assert heap.pop_due(49) == []
    assert heap.next_ms() == 50
    assert heap.pop_due(50) == ["c"] and len(heap) == 0


def test_a_cancelled_key_never_comes_due() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.schedule("a", 10)
    heap.cancel("a")
    assert "a" not in heap and heap.pop_due(100) == [] and heap.next_ms() is None


async def test_a_waiter_wakes_when_a_key_is_scheduled_sooner() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.schedule("late", 3_600_000)
    waiter = asyncio.create_task(heap.wait(0))
    await asyncio.sleep(0)
    heap.schedule("soon", 1)
    await asyncio.wait_for(waiter, 1)  # not the hour the first key is due in
