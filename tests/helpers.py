"""Test helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livecandle.emulator.process import EmulatorProcess

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"  # the project's own Binance-shaped payloads
# real Binance recordings beside the repository, for extra cross-checks that skip without them
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures" / "binance"


@dataclass(frozen=True)
class Endpoints:
    """Where an exchange is (or is not) listening."""

    rest_url: str
    ws_url: str


@contextlib.contextmanager
def binance_client(base_url: str) -> Iterator[Any]:
    """python-binance's Client, unmodified, pointed at ``base_url``. It takes (or makes)
    the thread's event loop; this gives it a fresh one and closes it afterwards. Call from
    a thread without a running loop."""
    from binance.client import Client

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        client = Client(ping=False)
        client.API_URL = base_url + "/api"
        yield client
        client.close_connection()
    finally:
        asyncio.set_event_loop(None)
        loop.close()


__all__ = ["FIXTURES", "ROOT", "SHARED_FIXTURES", "EmulatorProcess", "Endpoints", "binance_client"]
