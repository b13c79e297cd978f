"""The proxy's pure parts: Binance's weights of forwarded requests, the ticker figures'
formats, the exchangeInfo selection shared with the emulator, and its settings."""

from __future__ import annotations

import pytest

from livecandle.config import Settings
from livecandle.domain.intervals import DAY_MS, HOUR_MS, MINUTE_MS
from livecandle.exchange.binance import exchange_info
from livecandle.exchange.binance.params import BinanceParamError
from livecandle.web.proxy.tickers import average, percent, window_ms
from livecandle.web.proxy.upstream import weight


@pytest.mark.parametrize(
    ("name", "q", "expected"),
    [
        ("ticker/24hr", {"symbol": "BTCUSDT"}, 2),
        ("ticker/24hr", {"symbols": '["A","B"]'}, 2),
        ("ticker/24hr", {"symbols": "[" + ",".join(['"A"'] * 21) + "]"}, 40),
        ("ticker/24hr", {"symbols": "[" + ",".join(['"A"'] * 101) + "]"}, 80),
        ("ticker/24hr", {}, 80),
        ("ticker/price", {"symbol": "A"}, 2),
        ("ticker/price", {}, 4),
        ("ticker/bookTicker", {"symbols": '["A"]'}, 4),
        ("ticker", {"symbols": '["A","B","C"]'}, 12),
        ("ticker", {"symbols": "[" + ",".join(['"A"'] * 60) + "]"}, 200),
        ("depth", {"symbol": "A"}, 5),
        ("depth", {"symbol": "A", "limit": "500"}, 25),
        ("depth", {"symbol": "A", "limit": "1000"}, 50),
        ("depth", {"symbol": "A", "limit": "5000"}, 250),
        ("trades", {"symbol": "A"}, 25),
        ("aggTrades", {"symbol": "A"}, 4),
        ("exchangeInfo", {}, 20),
        ("avgPrice", {"symbol": "A"}, 2),
    ],
)
def test_a_forwarded_request_weighs_what_binance_counts(
    name: str, q: dict[str, str], expected: int
) -> None:
    assert weight(name, q) == expected


def test_price_change_percent_has_three_decimals_rounded_half_away_from_zero() -> None:
    assert percent(-3003, 100_000) == "-3.003"
    assert percent(15, 1_000_000) == "0.002"  # 0.0015 % rounds up
    assert percent(-1, 10**9) == "0.000"  # no "-0.000"
    assert percent(5, 0) == "0.000"


def test_the_weighted_average_is_quote_over_volume_truncated_to_8_decimals() -> None:
    # quote 1e-16 units / volume 1e-8 units = price 1e-8 units
    assert average(3 * 10**16, 2 * 10**8) == 15 * 10**7  # 3 quote / 2 base = 1.5
    assert average(10**16, 3 * 10**8) == 33_333_333  # 0.33333333, truncated
    assert average(1, 0) == 0


def test_window_size_accepts_binances_units_only() -> None:
    assert window_ms("1m") == MINUTE_MS and window_ms("23h") == 23 * HOUR_MS
    assert window_ms("7d") == 7 * DAY_MS
    for bad in ("60m", "24h", "8d", "0m", "1w", "1h30m", "m"):
        with pytest.raises(BinanceParamError):
            window_ms(bad)


def test_exchange_info_selection_filters_by_permission_and_status() -> None:
    statuses = {"A": "TRADING", "B": "BREAK", "C": "TRADING"}
    perms = {"A": {"SPOT"}, "B": {"SPOT", "MARGIN"}, "C": {"TRD_GRP_004"}}
    assert exchange_info.select({}, statuses, perms) == ["A", "B", "C"]
    assert exchange_info.select({"permissions": "MARGIN"}, statuses, perms) == ["B"]
    assert exchange_info.select({"permissions": '["SPOT","TRD_GRP_004"]'}, statuses, perms) == [
        "A",
        "B",
        "C",
    ]
    assert exchange_info.select({"symbolStatus": "TRADING"}, statuses, perms) == ["A", "C"]
    with pytest.raises(BinanceParamError) as e:
        exchange_info.select({"permissions": "SPOT", "symbol": "A"}, statuses, perms)
    assert e.value.code == -1128


def test_proxy_settings_come_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "LIVECANDLE_PROXY_FORWARD_SIGNED": "1",
            "LIVECANDLE_BINANCE_FAPI_URL": "http://f:1/",
            "LIVECANDLE_BINANCE_DAPI_URL": "http://d:2",
            "LIVECANDLE_PROXY_INFO_PERIOD_S": "30",
        }
    )
    assert s.proxy_forward_signed is True
    assert (s.binance_fapi_url, s.binance_dapi_url) == ("http://f:1", "http://d:2")
    assert s.proxy_info_period_s == 30.0
    assert Settings().proxy_forward_signed is False
