"""Supervised tasks: restarted with backoff after a failure, ``once`` jobs, status, stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from livecandle.runtime.supervisor import Supervisor


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_failing_task_is_restarted_after_a_growing_backoff() -> None:
    sup = Supervisor(backoff_base_s=0.1, backoff_cap_s=1.0)
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    third_run = asyncio.Event()

    async def job() -> None:
        starts.append(loop.time())
        if len(starts) <= 2:
            raise RuntimeError(f"boom {len(starts)}")
        third_run.set()
        await forever()

    before_ms = time.time_ns() // 1_000_000
    sup.spawn("job", job)
    async with asyncio.timeout(10):
        await third_run.wait()
    # equal jitter: the n-th restart waits at least half of min(cap, base * 2 ** (n - 1))
    assert starts[1] - starts[0] >= 0.05 - 0.001
    assert starts[2] - starts[1] >= 0.1 - 0.001
    status = sup.status()["job"]
    assert status["state"] == "running" and status["restarts"] == 2
    assert status["last_error"] == "RuntimeError: boom 2"
    assert before_ms <= status["last_error_ms"] <= time.time_ns() // 1_000_000
    assert sup.healthy
    await sup.stop()


async def test_a_task_waiting_to_restart_is_unhealthy_and_stop_cancels_the_wait() -> None:
    sup = Supervisor(backoff_base_s=60.0, backoff_cap_s=60.0)
    failed = asyncio.Event()

    async def job() -> None:
        failed.set()
        raise ConnectionError("exchange unreachable")

    task = sup.spawn("job", job)
    await failed.wait()  # the supervisor reaches its backoff in the same step as the raise
    assert sup.status()["job"]["state"] == "backoff"
    assert sup.status()["job"]["last_error"] == "ConnectionError: exchange unreachable"
    assert not sup.healthy
    await sup.stop()  # does not wait out the minute
    assert task.cancelled()


async def test_a_long_running_task_that_returns_is_restarted() -> None:
    sup = Supervisor(backoff_base_s=0.01, backoff_cap_s=0.01)
    calls = 0
    second_run = asyncio.Event()

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            second_run.set()
            await forever()

    sup.spawn("job", job)
    async with asyncio.timeout(10):
        await second_run.wait()
    assert sup.status()["job"]["restarts"] == 1
    assert sup.status()["job"]["last_error"] == "returned unexpectedly"
    await sup.stop()


async def test_a_once_job_is_done_when_it_returns() -> None:
    sup = Supervisor()
    ran: list[str] = []

    async def job() -> None:
        ran.append("job")

    await sup.spawn("backfill", job, once=True)
    assert ran == ["job"]
    assert sup.status() == {
        "backfill": {"state": "done", "restarts": 0, "last_error": None, "last_error_ms": None}
    }
    assert sup.healthy


async def test_a_once_job_that_fails_runs_again_until_it_succeeds() -> None:
    sup = Supervisor(backoff_base_s=0.01, backoff_cap_s=0.01)
    calls = 0

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ValueError("not yet")

    async with asyncio.timeout(10):
        await sup.spawn("backfill", job, once=True)
    assert calls == 3
    status = sup.status()["backfill"]
    assert (status["state"], status["restarts"]) == ("done", 2)
    assert status["last_error"] == "ValueError: not yet"


async def test_stop_cancels_every_running_task_and_reports_them_stopped() -> None:
    sup = Supervisor()
    running = {"a": asyncio.Event(), "b": asyncio.Event()}
    cancelled: list[str] = []

    def job(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            running[name].set()
            try:
                await forever()
            except asyncio.CancelledError:
                cancelled.append(name)
                raise

        return run

    tasks = [sup.spawn(name, job(name)) for name in running]
    for event in running.values():
        await event.wait()
    await sup.stop()
    assert sorted(cancelled) == ["a", "b"]
    assert all(t.done() for t in tasks)
    assert {n: s["state"] for n, s in sup.status().items()} == {"a": "stopped", "b": "stopped"}
    assert not sup.healthy


async def test_a_task_stopped_while_waiting_to_restart_reports_stopped() -> None:
    sup = Supervisor(backoff_base_s=60.0, backoff_cap_s=60.0)
    failed = asyncio.Event()

    async def job() -> None:
        failed.set()
        raise RuntimeError("boom")

    sup.spawn("job", job)
    await failed.wait()  # the supervisor starts its wait in the same step as the raise
    assert sup.status()["job"]["state"] == "backoff"
    await sup.stop()
    assert sup.status()["job"]["state"] == "stopped"
