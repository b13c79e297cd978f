"""``livecandle emulator``: a local server speaking Binance's market-data protocol."""

from __future__ import annotations

from typing import Any

import uvicorn

from livecandle.emulator.faults import Faults
from livecandle.emulator.server import Emulator, EmulatorConfig, build_app

__all__ = ["Emulator", "EmulatorConfig", "Faults", "build_app", "uvicorn_config"]


def uvicorn_config(emulator: Emulator, host: str, port: int, **kw: Any) -> uvicorn.Config:
    return uvicorn.Config(
        build_app(emulator),
        host=host,
        port=port,
        log_level="warning",
        ws_ping_interval=emulator.faults.ping_interval_s,
        ws_ping_timeout=emulator.faults.pong_timeout_s,
        lifespan="on",
        **kw,
    )
