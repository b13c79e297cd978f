"""One exchange IP's budget in Redis (issue 10 item 3): the request weight of a window and
the websocket connection attempts, taken atomically by every process of the IP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livecandle.domain.clock import ManualClock
from livecandle.exchange.binance.weights import Priority, WeightBudget
from livecandle.store import Keys, Store
from livecandle.store.budget import RedisConnectionAttempts, RedisWeightWindow
from tests.integration.redis_support import client, own_server

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


class _Answering(RedisWeightWindow):
    """The shared window, with ``on_answer`` run once just before its next answer is
    handed back (what happened while Redis answered)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.on_answer: list[Callable[[], object]] = []

    async def take(self, *args: Any, **kwargs: Any) -> tuple[bool, int, int]:
        answer = await super().take(*args, **kwargs)
        if self.on_answer:
            self.on_answer.pop(0)()
        return answer


async def test_a_window_that_turns_while_the_shared_count_answers_starts_empty(
    store: Store,
) -> None:
    """The old window is nearly full; a take answered just after the turn: its count is
    the old window's, and the request goes out in the new one. The new window is not
    taken as full (every process idle for a minute), and the request counts in it."""
    clock = ManualClock(T0)
    shared = _Answering(store)
    budget = WeightBudget(clock, limit=100, safety=1.0, sleep=_never, shared=shared)
    await budget.acquire(95, Priority.HISTORY)
    shared.on_answer.append(lambda: clock.set(T0 + 60_000))  # the next window
    await budget.acquire(2, Priority.GAP_FILL)
    assert budget.used == 2  # the new window holds this request alone
    async with asyncio.timeout(5):
        await budget.acquire(90, Priority.GAP_FILL)  # and has room: no wait
    # another process: the shared window counts both, 92 of 100, so 9 more wait
    await _waits(_budget(store, clock), 9, Priority.GAP_FILL)


async def _never(s: float) -> None:
    await asyncio.Event().wait()


async def test_a_pause_or_a_more_urgent_request_while_the_shared_count_answers_is_heeded(
    store: Store,
) -> None:
    """While a history request's take is answered: a 429 pauses every request (the
    history request does not go out during Retry-After), and once the pause is over a
    gap fill that came meanwhile goes first."""
    clock = ManualClock(T0)
    shared = _Answering(store)
    pausing, resume = asyncio.Event(), asyncio.Event()

    async def sleep(s: float) -> None:
        pausing.set()
        await resume.wait()

    budget = WeightBudget(clock, limit=100, safety=1.0, sleep=sleep, shared=shared)
    sent: list[tuple[str, bool]] = []

    async def request(name: str, priority: Priority) -> None:
        async with budget.sending(2, priority):
            sent.append((name, clock.now_ms() < budget.blocked_until_ms))

    gap_fill: list[asyncio.Task[None]] = []

    def a_429_and_a_gap_fill() -> None:
        budget.limit_reached(30, "429 on another request", used=100)
        gap_fill.append(asyncio.create_task(request("gap fill", Priority.GAP_FILL)))

    shared.on_answer.append(a_429_and_a_gap_fill)
    history = asyncio.create_task(request("history", Priority.HISTORY))
    async with asyncio.timeout(5):
        await pausing.wait()  # the history request waits out the pause
        assert sent == []
        clock.set(T0 + 60_000)  # Retry-After over, and a new window
        resume.set()
        await asyncio.gather(history, *gap_fill)
    assert [name for name, _ in sent] == ["gap fill", "history"]
    assert not any(paused for _, paused in sent)


async def test_a_429_in_one_process_pauses_every_process_of_the_ip(store: Store) -> None:
    """Process a is answered 429 (Retry-After 30 s); process b, whose own count says
    nothing of it, does not send before the pause's end: the exchange bans an IP that
    goes on sending after a 429."""
    clock = ManualClock(T0)
    a, b = _budget(store, clock), _budget(store, clock)
    await a.acquire(1, Priority.HISTORY)
    await b.acquire(1, Priority.HISTORY)
    a.limit_reached(30, "HTTP 429 on klines", used=100)
    await a.share_pause()
    await _waits(b, 1, Priority.GAP_FILL)  # even the most urgent request waits
    assert b.blocked_until_ms == T0 + 30_000
    clock.set(T0 + 60_000)  # the pause over, a new window
    async with asyncio.timeout(5):
        await b.acquire(1, Priority.GAP_FILL)
        await a.acquire(1, Priority.GAP_FILL)


async def test_with_the_shared_count_out_of_reach_each_process_takes_its_part(
    tmp_path: Path,
) -> None:
    """Redis gone: each process plans alone, within its part of the window (the processes
    it last saw asking), not the whole IP's budget each."""
    clock = ManualClock(T0)
    with own_server(tmp_path) as server:
        async with client(server.url) as redis:
            store = Store(redis, Keys())
            a, b, c = (_budget(store, clock) for _ in range(3))
            for p in (a, b, c):
                await p.acquire(1, Priority.HISTORY)
            await a.acquire(1, Priority.HISTORY)
            assert a.peers == 3 and a.used == 4
            server.stop()
            # HISTORY's ceiling is 90 of 100: a third of it is a's
            await a.acquire(20, Priority.HISTORY)
            assert a.used == 24 and a.shared_errors == 1
            await _waits(a, 10, Priority.HISTORY)
            assert a.stats()["shared"] == {"processes": 3, "errors": 2}
