"""One exchange IP's budget in Redis (issue 10 item 3): the request weight of a window and
the websocket connection attempts, taken atomically by every process of the IP."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from livecandle.domain.clock import ManualClock
from livecandle.exchange.binance.weights import Priority, WeightBudget
from livecandle.store import Store
from livecandle.store.budget import RedisConnectionAttempts, RedisWeightWindow

T0 = 1_700_000_040_000 + 1_000  # a second into a minute


WAITING: dict[int, asyncio.Event] = {}


def _budget(store: Store, clock: ManualClock) -> WeightBudget:
    async def sleep(s: float) -> None:  # a full window: the test says when time moves
        WAITING[id(budget)].set()
        await asyncio.Event().wait()

    budget = WeightBudget(
        clock, limit=100, safety=1.0, sleep=sleep, shared=RedisWeightWindow(store)
    )
    WAITING[id(budget)] = asyncio.Event()
    return budget


async def _waits(budget: WeightBudget, weight: int, priority: Priority) -> None:
    """``budget`` cannot take ``weight`` now: it sleeps until the next window."""
    WAITING[id(budget)].clear()
    waiting = asyncio.create_task(budget.acquire(weight, priority))
    await asyncio.wait_for(WAITING[id(budget)].wait(), 5)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_two_processes_together_stay_within_one_windows_weight(store: Store) -> None:
    clock = ManualClock(T0)
    a, b = _budget(store, clock), _budget(store, clock)
    await a.acquire(60, Priority.HISTORY)
    # b alone would take 50 (its own count is 0): the shared window holds a's 60
    await _waits(b, 50, Priority.HISTORY)
    assert b.used == 60
    await b.acquire(30, Priority.HISTORY)  # up to HISTORY's ceiling, 90
    await a.acquire(10, Priority.CLOSED)  # the urgent 10 % left
    assert (a.used, b.used) == (100, 90)
    # the next window is empty again for both
    clock.set(T0 + 60_000)
    await b.acquire(100, Priority.CLOSED)
    await _waits(a, 1, Priority.GAP_FILL)


async def test_requests_of_two_processes_on_their_way_at_a_turn_both_count_in_the_next_window(
    store: Store,
) -> None:
    """Each process has a request still unanswered when the window turns: the exchange may
    count both in the new window, so the shared count holds both (each process carries
    its own; the count is their sum, not the larger)."""
    clock = ManualClock(T0)
    a, b = _budget(store, clock), _budget(store, clock)
    async with contextlib.AsyncExitStack() as flying:
        await flying.enter_async_context(a.sending(10, Priority.HISTORY))
        await flying.enter_async_context(b.sending(10, Priority.HISTORY))
        clock.set(T0 + 60_000)  # both answered after the turn
    await a.acquire(1, Priority.HISTORY)
    await b.acquire(1, Priority.HISTORY)
    assert b.used == 22
    await a.acquire(1, Priority.HISTORY)  # carried once, not again
    assert a.used == 23


async def test_the_exchanges_header_raises_the_shared_count(store: Store) -> None:
    clock = ManualClock(T0)
    a, b = _budget(store, clock), _budget(store, clock)
    await a.acquire(1)
    a.observe(85)  # another client of the IP spent weight: the exchange says so
    await a.acquire(1)
    await _waits(b, 10, Priority.HISTORY)
    assert b.used == 86


async def test_connection_attempts_of_every_process_share_one_window(store: Store) -> None:
    a = RedisConnectionAttempts(store, limit=3, window_s=0.5, safety=1.0)
    b = RedisConnectionAttempts(store, limit=3, window_s=0.5, safety=1.0)
    await a.take()
    await b.take()
    await a.take()
    assert b.stats()["used"] == 2 and a.stats()["used"] == 3
    loop = asyncio.get_running_loop()
    started = loop.time()
    await b.take()  # the fourth waits until the first leaves the window
    assert loop.time() - started >= 0.3
    assert b.waits == 1
