"""A crashed Redis (SIGKILL) restarted under the whole service with live 1s candles,
with its append-only file (as ``serve``'s embedded Redis keeps it: ``appendfsync
everysec``) and without it (data gone): the service refills without a restart, no row is
lost, ``verify`` is clean (issue 13)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecandle.official.integrity import verify
from livecandle.runtime.redis_server import RedisServer
from tests.helpers import EmulatorProcess
from tests.integration.test_redis_trouble import (
    SERIES,
    caught_up,
    contiguous,
    health,
    not_crash_looping,
    now_ms,
    until,
    whole_service,
)


@contextlib.contextmanager
def persistent_server(tmp_path: Path) -> Iterator[RedisServer]:
    """The embedded Redis as ``serve`` runs it (append-only file, fsync every second),
    on a unix socket: the same URL after a restart."""
    with RedisServer(tmp_path / "r", persist=True) as s:
        assert s.url.startswith("unix://")
        yield s


def crash_and_restart(server: RedisServer, keep_aof: bool) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)  # a crash: no final save
    server.process.wait()
    if server.process.stderr is not None:
        server.process.stderr.close()
    server.process = None
    if not keep_aof:
        shutil.rmtree(server.data_dir / "appendonlydir")
    server.start()


@pytest.mark.parametrize("keep_aof", [True, False], ids=["with-aof", "without-aof"])
async def test_a_crashed_redis_restarted_is_refilled_without_a_service_restart(
    tmp_path: Path, emulator: EmulatorProcess, keep_aof: bool
) -> None:
    with persistent_server(tmp_path) as server:
        async with whole_service(server.url, emulator) as (_, web, store):
            await until(lambda: caught_up(store, now_ms()), 30)
            before = {str(s): (await store.meta(s)).count for s in SERIES}
            crash_and_restart(server, keep_aof)
            restarted = time.monotonic()
            after = {str(s): (await store.meta(s)).count for s in SERIES}
            await until(lambda: caught_up(store, now_ms()), 30)
            recovered_s = time.monotonic() - restarted

            async def healthy() -> bool:
                code, body = await health(web)
                return code == 200 and body["status"] == "ok"

            await until(healthy, 15)
            _, body = await health(web)
            assert not_crash_looping(body) == [], body["tasks"]
            assert await contiguous(store) == {str(s): 0 for s in SERIES}
            report = await verify(store, SERIES, now_ms())
            assert report.ok, report.text()
            refilled = {str(s): (await store.meta(s)).count for s in SERIES}
            print(
                f"redis killed, restarted {'with' if keep_aof else 'without'} its AOF: rows "
                f"{before} -> {after} at the restart -> {refilled}, caught up in "
                f"{recovered_s:.1f} s"
            )
