"""BinanceRest against the emulator over real HTTP: paging, weights, errors, retries."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiohttp import web

from livecandle.exchange.binance.rest import (
    BinanceBanned,
    BinanceError,
    BinanceRest,
    BinanceUnavailable,
)
from livecandle.runtime.redis_server import free_port
from tests.helpers import EmulatorProcess
from tests.integration.http_support import http_server

MIN = 60_000


async def test_forward_paging_has_no_overlap_and_no_hole(emulator: EmulatorProcess) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        now = await rest.server_time()
        start = (now // MIN - 2500) * MIN
        pages = [p async for p in rest.iter_klines("BTCUSDT", "1m", start)]
    assert [len(p) for p in pages][:2] == [1000, 1000]
    opens = [r.open_ms for p in pages for r in p]
    assert opens[0] == start
    assert opens == [start + i * MIN for i in range(len(opens))]
    assert len(opens) in (2501, 2502)  # up to and including the forming candle


async def test_paging_stops_at_end_time(emulator: EmulatorProcess) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        now = await rest.server_time()
        start = (now // MIN - 1500) * MIN
        end = start + 1000 * MIN  # inclusive: 1001 rows
        opens = [r.open_ms async for p in rest.iter_klines("BTCUSDT", "1m", start, end) for r in p]
    assert opens == [start + i * MIN for i in range(1001)]


async def test_binance_error_names_symbol_and_interval(emulator: EmulatorProcess) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        with pytest.raises(BinanceError, match=r"symbol 'NOPE' interval '1m': -1121 Invalid"):
            await rest.klines("NOPE", "1m")
        with pytest.raises(BinanceError, match=r"interval '9m': -1120"):
            await rest.klines("BTCUSDT", "9m")


async def test_used_weight_is_read_from_the_header(emulator: EmulatorProcess) -> None:
    async with httpx.AsyncClient() as other:  # another client of this IP spends weight 3
        for _ in range(3):
            (await other.get(emulator.rest_url + "/api/v3/ping")).raise_for_status()
    async with BinanceRest(emulator.rest_url) as rest:
        await rest.klines("BTCUSDT", "1m", limit=1)
        # its own count would be 2; the exchange counts 3 + 2 for the IP
        assert rest.budget.used == emulator.state()["accepted_weight"] == 5


async def test_server_clock_follows_a_shifted_exchange_clock() -> None:
    with EmulatorProcess("--clock-offset-ms", "86400000", "--history-days", "3") as emu:
        async with BinanceRest(emu.rest_url) as rest:
            await rest.server_time()
            assert abs(rest.clock.offset_ms - 86_400_000) < 1000


async def test_learned_limit_spreads_requests_without_a_single_429() -> None:
    with EmulatorProcess(
        "--weight-limit", "20", "--weight-window", "2", "--history-days", "3"
    ) as emu:
        async with BinanceRest(emu.rest_url) as rest:
            # exchangeInfo goes just after a turn of the emulator's 2-second window (its
            # clock is this host's): answered within the plan's skew margin, its weight is
            # the new window's, which the plan, learning the window from it, begins later
            now_ms = rest.clock.now_ms()
            await asyncio.sleep(((now_ms // 2000 + 1) * 2000 + 5 - now_ms) / 1000)
            await rest.exchange_info()  # weight 20: the whole first window
            assert rest.budget.limit == 20 and rest.budget.window_ms == 2000
            started = time.monotonic()
            for _ in range(15):  # 30 weight: needs two more windows
                await rest.klines("BTCUSDT", "1m", limit=1)
            assert time.monotonic() - started > 1.0
        state = emu.state()
        assert state["rejected_429"] == 0 and state["rejected_418"] == 0


async def test_429_retry_after_is_honoured_without_a_ban() -> None:
    with EmulatorProcess(
        "--weight-limit", "6", "--weight-window", "2", "--history-days", "3"
    ) as emu:
        async with BinanceRest(emu.rest_url) as rest:  # does not know the limit
            for _ in range(8):
                await rest.klines("BTCUSDT", "1m", limit=1)
        state = emu.state()
        assert state["rejected_429"] >= 1
        assert state["rejected_418"] == 0


async def test_418_stops_every_rest_call_until_the_ban_ends() -> None:
    with EmulatorProcess("--weight-limit", "2", "--history-days", "3") as emu:
        async with httpx.AsyncClient() as careless:  # ignores 429s: gets the IP banned
            for _ in range(6):
                await careless.get(
                    emu.rest_url + "/api/v3/klines",
                    params={"symbol": "BTCUSDT", "interval": "1m", "limit": 1},
                )
        async with BinanceRest(emu.rest_url) as rest:
            with pytest.raises(BinanceBanned) as info:
                await rest.klines("BTCUSDT", "1m", limit=1)
            assert info.value.until_ms > rest.clock.now_ms() + 60_000
            assert rest.budget.blocked_until_ms >= info.value.until_ms - 1000
            assert "banned" in rest.budget.block_reason


async def test_5xx_are_retried_until_success(emulator: EmulatorProcess) -> None:
    emulator.control(fail_rate=0.5)
    async with BinanceRest(emulator.rest_url, backoff_base_s=0.01, max_retries=20) as rest:
        for _ in range(10):
            assert len(await rest.klines("BTCUSDT", "1m", limit=2)) == 2
        assert rest.retries > 0


async def test_persistent_5xx_give_up_after_capped_retries(emulator: EmulatorProcess) -> None:
    emulator.control(fail_rate=1.0)
    async with BinanceRest(emulator.rest_url, backoff_base_s=0.01, max_retries=3) as rest:
        with pytest.raises(BinanceUnavailable, match=r"klines for symbol 'BTCUSDT'.*HTTP 502"):
            await rest.klines("BTCUSDT", "1m")
        assert rest.retries == 3


async def test_network_errors_are_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    async with BinanceRest(url, backoff_base_s=0.01, max_retries=2) as rest:
        with pytest.raises(BinanceUnavailable, match="time: 3 network failures"):
            await rest.server_time()


async def test_agg_trades_from_id(emulator: EmulatorProcess) -> None:
    async with BinanceRest(emulator.rest_url) as rest:
        trades = await rest.agg_trades("ETHUSDT", from_id=100, limit=50)
    assert [t.a for t in trades] == list(range(100, 150))
    assert all(t.trade().is_valid for t in trades)


async def test_failing_says_the_last_attempts_all_failed_until_one_succeeds(
    emulator: EmulatorProcess,
) -> None:
    emulator.control(fail_rate=1.0)
    async with BinanceRest(emulator.rest_url, backoff_base_s=0.01, max_retries=3) as rest:
        with pytest.raises(BinanceUnavailable):
            await rest.klines("BTCUSDT", "1m", limit=1)
        assert rest.failing and rest.failures_in_row == 4
        assert rest.last_error is not None and "HTTP 502" in rest.last_error
        emulator.control(fail_rate=0.0)
        await rest.klines("BTCUSDT", "1m", limit=1)
        assert not rest.failing and rest.last_error is None


async def test_a_changed_limit_is_learned_from_exchange_info_without_a_429() -> None:
    with EmulatorProcess(
        "--weight-limit", "200", "--weight-window", "2", "--history-days", "3"
    ) as emu:
        async with BinanceRest(emu.rest_url) as rest:
            await rest.exchange_info()
            assert rest.budget.limit == 200
            emu.control(weight_limit=90)
            keeper = asyncio.create_task(rest.keep_limits(period_s=0.2))
            try:
                async with asyncio.timeout(10):
                    while True:  # re-read every 0.2 s
                        if rest.budget.limit == 90:
                            break
                        await asyncio.sleep(0.05)
            finally:
                keeper.cancel()
        assert emu.state()["rejected_429"] == 0


async def test_a_redirect_is_not_followed_each_request_sent_is_one_counted() -> None:
    """An answer that redirects (a misconfigured mirror, a captive portal) is an error:
    following it would send a request the weight plan never counted."""
    followed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response([])

    routes = {"/api/v3/klines": moved, "/elsewhere": elsewhere}
    async with http_server(routes) as url, BinanceRest(url, max_retries=0) as rest:
        with pytest.raises(BinanceError, match="302"):
            await rest.klines("BTCUSDT", "1m", limit=1)
        assert rest.budget.requests == 1
    assert followed == []
