"""Starting and stopping uvicorn servers inside our own event loop (signals stay ours)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn

GRACEFUL_SHUTDOWN_S = 5


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the owner's stop event, and stops
    within ``GRACEFUL_SHUTDOWN_S`` of being asked to (uvicorn would otherwise wait for
    every open connection: a client that never closes its websocket held it for ever)."""

    def __init__(self, config: uvicorn.Config) -> None:
        if config.timeout_graceful_shutdown is None:
            config.timeout_graceful_shutdown = GRACEFUL_SHUTDOWN_S
        super().__init__(config)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def start(config: uvicorn.Config) -> tuple[EmbeddedServer, asyncio.Task[None], int]:
    """Start serving; returns the server, its task and the port it listens on."""
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    if task.done():
        await task
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    sockets = [s for srv in server.servers for s in srv.sockets]
    port = int(sockets[0].getsockname()[1]) if sockets else int(config.port)
    return server, task, port


async def stop(server: EmbeddedServer, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(Exception):
        await task
