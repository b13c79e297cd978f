"""Settings read from an injected environment mapping; bad values name the variable."""

from __future__ import annotations

import pytest

from livecandle.config import ConfigError, Settings, parse_intervals, parse_symbols
from livecandle.domain.intervals import INTERVALS
from livecandle.domain.model import SeriesKey


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    defaults = Settings()
    assert defaults.symbols == ("BTCUSDT", "ETHUSDT")
    assert [i.name for i in defaults.intervals] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert (defaults.redis_url, defaults.port, defaults.write_token) == (None, 8000, None)


def test_every_variable_sets_its_setting() -> None:
    settings = Settings.from_env(
        {
            "LIVECANDLE_REDIS_URL": "redis://cache:6380/2",
            "LIVECANDLE_REDIS_CLUSTER": "true",
            "LIVECANDLE_KEY_PREFIX": "lc:",
            "LIVECANDLE_SYMBOLS": "solusdt, XRPBTC",
            "LIVECANDLE_INTERVALS": "1s,1h",
            "LIVECANDLE_BINANCE_REST_URL": "http://127.0.0.1:9000/",
            "LIVECANDLE_BINANCE_WS_URL": "ws://127.0.0.1:9000/",
            "LIVECANDLE_HOST": "0.0.0.0",
            "LIVECANDLE_PORT": "8080",
            "LIVECANDLE_WRITE_TOKEN": "t0ken",
            "LIVECANDLE_DATA_DIR": "/var/lib/livecandle",
            "LIVECANDLE_BACKFILL_CANDLES": "250",
            "LIVECANDLE_LIVE_PUBLISH_PERIOD_MS": "20",
            "LIVECANDLE_STREAM_SILENCE_S": "30",
            "LIVECANDLE_LIVE_WRITE_PERIOD_MS": "200",
        }
    )
    assert settings == Settings().with_(
        redis_url="redis://cache:6380/2",
        redis_cluster=True,
        key_prefix="lc:",
        symbols=("SOLUSDT", "XRPBTC"),
        intervals=(INTERVALS["1s"], INTERVALS["1h"]),
        binance_rest_url="http://127.0.0.1:9000",  # without the trailing slash
        binance_ws_url="ws://127.0.0.1:9000",
        host="0.0.0.0",
        port=8080,
        write_token="t0ken",
        data_dir="/var/lib/livecandle",
        backfill_candles=250,
        live_publish_period_ms=20,
        stream_silence_s=30.0,
        live_write_period_ms=200,
    )
    assert isinstance(settings.stream_silence_s, float)


def test_empty_variables_keep_the_defaults() -> None:
    env = {name: "" for name in ("LIVECANDLE_REDIS_URL", "LIVECANDLE_SYMBOLS", "LIVECANDLE_PORT")}
    assert Settings.from_env(env) == Settings()


@pytest.mark.parametrize(
    ("flag", "cluster"),
    [("1", True), ("true", True), ("YES", True), ("True", True), ("0", False), ("no", False)],
)
def test_the_cluster_flag_is_true_for_1_true_or_yes(flag: str, cluster: bool) -> None:
    assert Settings.from_env({"LIVECANDLE_REDIS_CLUSTER": flag}).redis_cluster is cluster


def test_symbols_are_upper_cased_and_repeats_dropped_in_order() -> None:
    env = {"LIVECANDLE_SYMBOLS": "ethusdt,BTCUSDT,,ETHUSDT", "LIVECANDLE_INTERVALS": "5m,1m,5m"}
    settings = Settings.from_env(env)
    assert settings.symbols == ("ETHUSDT", "BTCUSDT")
    assert settings.intervals == (INTERVALS["5m"], INTERVALS["1m"])
    assert settings.series == (
        SeriesKey.of("ETHUSDT", "5m"),
        SeriesKey.of("ETHUSDT", "1m"),
        SeriesKey.of("BTCUSDT", "5m"),
        SeriesKey.of("BTCUSDT", "1m"),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIVECANDLE_PORT", "http"),
        ("LIVECANDLE_PORT", "65536"),
        ("LIVECANDLE_PORT", "-1"),
        ("LIVECANDLE_BACKFILL_CANDLES", "0"),
        ("LIVECANDLE_BACKFILL_CANDLES", "1e3"),
        ("LIVECANDLE_LIVE_PUBLISH_PERIOD_MS", "0"),
        ("LIVECANDLE_LIVE_PUBLISH_PERIOD_MS", "60001"),
        ("LIVECANDLE_STREAM_SILENCE_S", "2.5"),
        ("LIVECANDLE_FETCHER_NICE", "20"),
        ("LIVECANDLE_FETCHER_NICE", "-1"),
        ("LIVECANDLE_STREAM_SILENCE_S", "3601"),
        ("LIVECANDLE_LIVE_WRITE_PERIOD_MS", "0"),
        ("LIVECANDLE_LIVE_WRITE_PERIOD_MS", "ten"),
        ("LIVECANDLE_SYMBOLS", "BTC-USDT"),
        ("LIVECANDLE_SYMBOLS", " , "),
        ("LIVECANDLE_INTERVALS", "7m"),
        ("LIVECANDLE_INTERVALS", ","),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable_and_the_value(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value) and value in str(caught.value)


def test_the_command_line_parsers_name_their_option() -> None:
    with pytest.raises(ConfigError, match="--symbols: symbol 'BTC/USDT'"):
        parse_symbols("btc/usdt", "--symbols")
    with pytest.raises(ConfigError, match="--intervals: interval '7m'"):
        parse_intervals("1m,7m", "--intervals")
    assert parse_symbols("btcusdt") == ("BTCUSDT",)


def test_symbols_may_mix_names_and_patterns() -> None:
    settings = Settings.from_env(
        {"LIVECANDLE_SYMBOLS": "*usdt, btceur,BTC*,*USDT", "LIVECANDLE_UNIVERSE_PERIOD_S": "30"}
    )
    assert settings.symbols == ("BTCEUR",)  # followed as named
    assert settings.symbol_patterns == ("*USDT", "BTC*")  # resolved from the listing
    assert settings.universe_period_s == 30.0
    assert [str(s) for s in settings.series] == [
        f"BTCEUR:{i}" for i in ("1m", "5m", "15m", "1h", "4h", "1d")
    ]


def test_a_star_alone_follows_no_named_symbol_and_no_default() -> None:
    settings = Settings.from_env({"LIVECANDLE_SYMBOLS": "*"})
    assert (settings.symbols, settings.symbol_patterns) == ((), ("*",))
    assert settings.series == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIVECANDLE_SYMBOLS", "*-USDT"),
        ("LIVECANDLE_SYMBOLS", "*USDT,BTC/EUR"),
        ("LIVECANDLE_UNIVERSE_PERIOD_S", "0"),
    ],
)
def test_a_bad_pattern_or_period_names_the_variable_and_the_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)
    assert value.split(",")[-1] in str(caught.value)


def test_following_on_demand_has_a_cap_and_an_idle_time_zero_cap_disables() -> None:
    default = Settings.from_env({})
    assert (default.proxy_follow_cap, default.proxy_follow_idle_s) == (200, 86_400.0)
    s = Settings.from_env(
        {"LIVECANDLE_PROXY_FOLLOW_CAP": "0", "LIVECANDLE_PROXY_FOLLOW_IDLE_S": "600"}
    )
    assert (s.proxy_follow_cap, s.proxy_follow_idle_s) == (0, 600.0)
    for name, value in (("CAP", "-1"), ("CAP", "many"), ("IDLE_S", "0")):
        with pytest.raises(ConfigError, match=f"LIVECANDLE_PROXY_FOLLOW_{name}"):
            Settings.from_env({f"LIVECANDLE_PROXY_FOLLOW_{name}": value})
