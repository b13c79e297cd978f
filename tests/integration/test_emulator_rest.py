"""The emulator's REST API speaks Binance's protocol, and its klines are its trades."""

from __future__ import annotations

import datetime as dt
import itertools

import httpx
import pytest

from tests.builders import reference_kline
from tests.helpers import EmulatorProcess, binance_client

MIN = 60_000


def get(emu: EmulatorProcess, path: str, **params: object) -> httpx.Response:
    return httpx.get(emu.rest_url + path, params=params, timeout=10)  # type: ignore[arg-type]


def test_ping_time_and_weights_in_headers(emulator: EmulatorProcess) -> None:
    r = get(emulator, "/api/v3/ping")
    assert r.json() == {}
    used = int(r.headers["x-mbx-used-weight-1m"])
    r = get(emulator, "/api/v3/exchangeInfo")
    assert int(r.headers["x-mbx-used-weight-1m"]) == used + 20
    info = r.json()
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }
    t = get(emulator, "/api/v3/time").json()["serverTime"]
    assert abs(t - dt.datetime.now(dt.UTC).timestamp() * 1000) < 5000


def test_klines_start_time_limit_and_ascending_order(emulator: EmulatorProcess) -> None:
    now = get(emulator, "/api/v3/time").json()["serverTime"]
    start = now - 50 * MIN + 1234  # not aligned: the first row opens at the next minute
    rows = get(
        emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=start, limit=10
    ).json()
    assert len(rows) == 10
    assert rows[0][0] == (start // MIN + 1) * MIN
    assert [r[0] for r in rows] == [rows[0][0] + i * MIN for i in range(10)]
    assert all(r[6] == r[0] + MIN - 1 for r in rows)


def test_klines_end_time_gives_the_newest_up_to_it(emulator: EmulatorProcess) -> None:
    now = get(emulator, "/api/v3/time").json()["serverTime"]
    end = (now // MIN - 20) * MIN
    rows = get(
        emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", endTime=end, limit=5
    ).json()
    assert [r[0] for r in rows] == [end - 4 * MIN + i * MIN for i in range(5)]
    same = get(
        emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=end, endTime=end
    ).json()
    assert [r[0] for r in same] == [end]


def test_without_times_the_last_row_is_the_forming_candle(emulator: EmulatorProcess) -> None:
    rows = get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m").json()
    now = get(emulator, "/api/v3/time").json()["serverTime"]
    assert len(rows) == 500  # Binance's default limit
    assert rows[-1][0] <= now < rows[-1][6]
    assert all(r[6] < now for r in rows[:-1])


def test_limit_is_capped_at_1000_and_must_be_positive(emulator: EmulatorProcess) -> None:
    rows = get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=5000).json()
    assert len(rows) == 1000
    r = get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=0)
    assert r.status_code == 400 and r.json()["code"] == -1130


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPE", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "2m"}, -1120),
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "12a"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "foo": "1"}, -1104),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 5, "endTime": 4}, -1128),
    ],
)
def test_bad_parameters_get_binance_error_bodies(
    emulator: EmulatorProcess, params: dict[str, object], code: int
) -> None:
    r = get(emulator, "/api/v3/klines", **params)
    assert r.status_code == 400
    assert r.json()["code"] == code and r.json()["msg"]


def test_closed_live_kline_equals_the_aggregate_of_its_trades(emulator: EmulatorProcess) -> None:
    now = get(emulator, "/api/v3/time").json()["serverTime"]
    # the newest closed second in the live region with a trade in it
    recent = get(emulator, "/api/v3/aggTrades", symbol="BTCUSDT", limit=1000).json()
    open_ms = max(t["T"] // 1000 * 1000 for t in recent if t["T"] // 1000 < now // 1000)
    [k] = get(
        emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1s", startTime=open_ms, limit=1
    ).json()
    trades = get(
        emulator,
        "/api/v3/aggTrades",
        symbol="BTCUSDT",
        startTime=open_ms,
        endTime=open_ms + 999,
        limit=1000,
    ).json()
    assert trades
    assert k == reference_kline(trades, open_ms, open_ms + 999)


def test_history_klines_equal_the_aggregate_of_their_trades(emulator: EmulatorProcess) -> None:
    state = emulator.state()["symbols"]["ETHUSDT"]
    for open_ms in (
        state["live_start_ms"] - 3 * 86_400_000 - 7 * MIN,  # 1 h blocks
        state["live_start_ms"] - 86_400_000 + 5 * MIN,  # 1 min blocks
        state["live_start_ms"] - 30 * MIN,
    ):  # 1 s blocks
        open_ms = open_ms // MIN * MIN
        [k] = get(
            emulator, "/api/v3/klines", symbol="ETHUSDT", interval="1m", startTime=open_ms, limit=1
        ).json()
        trades = get(
            emulator,
            "/api/v3/aggTrades",
            symbol="ETHUSDT",
            startTime=open_ms,
            endTime=open_ms + MIN - 1,
            limit=1000,
        ).json()
        if trades:
            assert k == reference_kline(trades, open_ms, open_ms + MIN - 1)
        else:  # an interval without trades: previous close, zero volume
            prev = get(
                emulator,
                "/api/v3/klines",
                symbol="ETHUSDT",
                interval="1m",
                endTime=open_ms - 1,
                limit=1,
            ).json()[0]
            assert k[1:5] == [prev[4]] * 4 and k[5] == "0.00000000" and k[8] == 0


def test_empty_seconds_repeat_the_previous_close(emulator: EmulatorProcess) -> None:
    state = emulator.state()["symbols"]["BTCUSDT"]
    start = state["live_start_ms"] - 2 * 86_400_000  # 1 min blocks of 4 trades: most 1s empty
    rows = get(
        emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1s", startTime=start, limit=600
    ).json()
    empty = [i for i, r in enumerate(rows) if r[8] == 0 and i > 0]
    assert len(empty) > 500
    for i in empty:
        assert rows[i][1:5] == [rows[i - 1][4]] * 4
        assert rows[i][5] == rows[i][7] == "0.00000000"


def test_agg_trade_ids_and_trade_ids_are_contiguous(emulator: EmulatorProcess) -> None:
    last = emulator.state()["symbols"]["BTCUSDT"]["last_agg_id"]
    seen: list[dict[str, object]] = []
    for from_id in (0, 5000, last - 900):
        page = get(
            emulator, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=from_id, limit=1000
        ).json()
        assert page[0]["a"] == from_id
        seen = page
        for a, b in itertools.pairwise(page):
            assert b["a"] == a["a"] + 1  # type: ignore[operator]
            assert b["f"] == a["l"] + 1  # type: ignore[operator]
            assert b["T"] >= a["T"]  # type: ignore[operator]
    assert seen


def test_weight_limit_gives_429_with_retry_after_then_418(emulator: EmulatorProcess) -> None:
    for _ in range(3):  # the requests all in one of the emulator's minutes: else again
        minute = emulator.control(reset_limits=True, weight_limit=10)["now_ms"] // 60_000
        statuses = []
        for _ in range(12):
            r = get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1)
            statuses.append(r.status_code)
            if r.status_code in (418, 429):
                assert 1 <= int(r.headers["retry-after"]) <= 120 * 2
                assert r.json()["code"] == -1003
        if emulator.state()["now_ms"] // 60_000 == minute:
            break
    else:
        pytest.fail("three runs of 12 requests each straddled a minute")
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    assert 418 in statuses


def test_exchange_outage_has_no_bars() -> None:
    now = dt.datetime.now(dt.UTC)
    day = (now - dt.timedelta(days=5)).strftime("%Y-%m-%d")
    with EmulatorProcess("--history-days", "10", "--outage", f"{day}T06:00Z/{day}T07:00Z") as emu:
        start = int(dt.datetime.fromisoformat(f"{day}T05:00+00:00").timestamp() * 1000)
        rows = get(
            emu, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=start, limit=3
        ).json()
        assert [r[0] for r in rows] == [start, start + 2 * 3_600_000, start + 3 * 3_600_000]
        day_row = get(
            emu,
            "/api/v3/klines",
            symbol="BTCUSDT",
            interval="1d",
            startTime=start - 5 * 3_600_000,
            limit=1,
        ).json()
        assert day_row[0][0] == start - 5 * 3_600_000  # the day still has a bar


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-binance's websockets import
def test_an_unmodified_binance_client_library_pages_through_klines(
    emulator: EmulatorProcess,
) -> None:
    with binance_client(emulator.rest_url) as client:
        now = client.get_server_time()["serverTime"]
        start = (now // MIN - 1500) * MIN
        rows = client.get_historical_klines("BTCUSDT", "1m", start, now)
    opens = [r[0] for r in rows]
    assert opens[0] == start and len(opens) >= 1500
    assert opens == sorted(set(opens))
    assert all(b - a == MIN for a, b in itertools.pairwise(opens))
