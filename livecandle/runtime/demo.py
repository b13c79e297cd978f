"""``livecandle demo``: the exchange emulator and the whole service in one process,
fully offline. Prints the URL to open."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile

from livecandle.config import Settings
from livecandle.emulator import Emulator, EmulatorConfig, uvicorn_config
from livecandle.runtime import http_server
from livecandle.runtime.redis_server import free_port
from livecandle.runtime.serve import serve

log = logging.getLogger(__name__)


async def demo(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> None:
    port = free_port()
    emulator = Emulator(
        EmulatorConfig(symbols=settings.symbols, seed=args.seed, rate_per_s=args.rate)
    )
    server, task, port = await http_server.start(uvicorn_config(emulator, "127.0.0.1", port))
    log.info("exchange emulator on http://127.0.0.1:%d (seed %d)", port, args.seed)
    data_dir = settings.data_dir
    scratch = None
    if settings.redis_url is None and data_dir == "./data":
        # the demo's emulated market must not mix with real data in ./data
        scratch = tempfile.TemporaryDirectory(prefix="livecandle-demo-")
        data_dir = scratch.name
    demo_settings = settings.with_(
        binance_rest_url=f"http://127.0.0.1:{port}",
        binance_ws_url=f"ws://127.0.0.1:{port}",
        data_dir=data_dir,
    )
    try:
        await serve(demo_settings, {"fetcher", "stream", "web"}, stop)
    finally:
        await http_server.stop(server, task)
        if scratch is not None:
            scratch.cleanup()
