"""Supervised background tasks: failures are logged with context, restarted with capped
jittered backoff and reported by ``status()`` (surfaced in ``/healthz``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from livecandle.backoff import Backoff
from livecandle.domain.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class TaskState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    DONE = "done"
    STOPPED = "stopped"


@dataclass
class TaskInfo:
    name: str
    state: TaskState = TaskState.STARTING
    restarts: int = 0
    last_error: str | None = None
    last_error_ms: int | None = None
    started_ms: int = 0


class Supervisor:
    def __init__(
        self,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.clock = clock or SystemClock()
        self.infos: dict[str, TaskInfo] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(
        self, name: str, factory: Callable[[], Awaitable[None]], once: bool = False
    ) -> asyncio.Task[None]:
        """Run ``factory()`` until cancelled; restart it whenever it fails or returns
        (``once``: a job that is done when it returns, restarted only if it fails)."""
        info = self.infos[name] = TaskInfo(name, started_ms=self.clock.now_ms())
        task = asyncio.create_task(self._keep(info, factory, once), name=name)
        self._tasks[name] = task
        return task

    async def _keep(
        self, info: TaskInfo, factory: Callable[[], Awaitable[None]], once: bool
    ) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        while True:
            info.state = TaskState.RUNNING
            started_s = time.monotonic()
            try:
                await factory()
                if once:
                    info.state = TaskState.DONE
                    return
                error = "returned unexpectedly"
            except asyncio.CancelledError:
                info.state = TaskState.STOPPED
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                log.exception("task %s failed (restart %d)", info.name, info.restarts + 1)
            if time.monotonic() - started_s > 60:
                backoff.reset()  # it ran for a while: start the backoff over
            info.restarts += 1
            info.last_error = error
            info.last_error_ms = self.clock.now_ms()
            info.state = TaskState.BACKOFF
            try:
                await backoff.sleep()
            except asyncio.CancelledError:  # stopped while waiting to restart
                info.state = TaskState.STOPPED
                raise

    def cancel(self, name: str) -> bool:
        """Stop the task ``name`` for good (what it served is gone): forgotten, not
        reported as stopped."""
        task = self._tasks.pop(name, None)
        self.infos.pop(name, None)
        if task is None:
            return False
        task.cancel()
        return True

    def status(self) -> dict[str, Any]:
        return {
            name: {
                "state": i.state.value,
                "restarts": i.restarts,
                "last_error": i.last_error,
                "last_error_ms": i.last_error_ms,
            }
            for name, i in self.infos.items()
        }

    @property
    def healthy(self) -> bool:
        return all(i.state in (TaskState.RUNNING, TaskState.DONE) for i in self.infos.values())

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
