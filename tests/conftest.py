from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livecandle.runtime.redis_server import RedisServer
from livecandle.store import Keys, Store
from tests.helpers import EmulatorProcess


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole session, on a free loopback port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), persist=False, tcp=True)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def store(redis: aioredis.Redis) -> Store:
    return Store(redis, Keys())


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    """One emulator for the session (30 days of history, 20 trades/s per symbol)."""
    with EmulatorProcess("--rate", "20", "--history-days", "30", "--seed", "7") as emu:
        yield emu


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The session emulator with limits reset and every fault switch off."""
    emulator_process.control(
        reset_limits=True,
        weight_limit=6000,
        enforce_weights=True,
        fail_rate=0.0,
        skip_rate=0.0,
    )
    return emulator_process


@pytest.fixture
def artifacts() -> Path:
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Leaked sockets or loops then warn in the test that leaked them, not a later one."""
    yield
    gc.collect()
