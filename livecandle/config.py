"""Settings: plain data read from an injectable environment mapping (never patched)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from livecandle.domain.intervals import Interval, parse_interval
from livecandle.domain.model import SeriesKey, validate_symbol
from livecandle.domain.universe import Selection, is_pattern

BINANCE_REST_URL = "https://data-api.binance.vision"
BINANCE_WS_URL = "wss://data-stream.binance.vision"

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEFAULT_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting and the value."""


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None = None
    redis_cluster: bool = False
    key_prefix: str = ""
    # explicit names of LIVECANDLE_SYMBOLS (followed as listed); patterns (``*``,
    # ``*USDT``, ``BTC*``) are resolved at run time from the exchange's listing
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    symbol_patterns: tuple[str, ...] = ()
    universe_period_s: float = 60.0  # exchangeInfo re-read (weight 20) this often
    intervals: tuple[Interval, ...] = field(
        default_factory=lambda: tuple(parse_interval(i) for i in DEFAULT_INTERVALS)
    )
    binance_rest_url: str = BINANCE_REST_URL
    binance_ws_url: str = BINANCE_WS_URL
    host: str = "127.0.0.1"
    port: int = 8000
    write_token: str | None = None
    data_dir: str = "./data"
    backfill_candles: int = 1000
    live_write_period_ms: int = 100
    live_publish_period_ms: int = 10
    fetch_concurrency: int = 4
    stream_silence_s: float = 10.0
    weight_safety: float = 0.97
    rest_max_in_flight: int = 2  # REST requests on their way at once (see weights.py)
    # a process whose only role is the fetcher lowers its CPU priority by this (os.nice):
    # history is background work, the live path of the same machine comes first
    fetcher_nice: int = 10
    # issue 14: realtime limits
    realtime_max_queue: int = 256
    realtime_stall_s: float = 30.0
    # issue 14: web limits
    cors_origins: tuple[str, ...] = ()  # besides the page's own origin; "*" for any
    ws_max_bytes: int = 64 * 1024  # one websocket frame / engine.io message
    header_timeout_s: float = 10.0  # a request's headers must be complete within this
    read_cache_entries: int = 10_000  # answers whose official rows the web app keeps
    # issue 14: redis limits
    redis_max_connections: int = 64
    redis_timeout_s: float = 3.0
    # issue 13: per-address and per-client limits (0: no limit)
    connections_per_ip: int = 2000  # open TCP connections from one address
    requests_per_ip: int = 32  # HTTP requests one address runs at once
    queued_requests_per_ip: int = 256  # waiting for their turn; past it a 429
    socketio_sessions_per_ip: int = 2000
    socketio_messages_per_s: int = 20  # per client, burst twice that
    socketio_max_rooms: int = 4096  # per client
    # issue 11: the Binance proxy (web/proxy)
    proxy_forward_signed: bool = False  # forward API-key requests untouched (else refused)
    binance_fapi_url: str = "https://fapi.binance.com"  # /fapi/... forwarded here
    binance_dapi_url: str = "https://dapi.binance.com"  # /dapi/... forwarded here
    proxy_info_period_s: float = 60.0  # the stored exchangeInfo is re-read this often
    # symbols a client asks the proxy for are followed on demand: at most this many (0:
    # none), each until nobody asked for it in proxy_follow_idle_s
    proxy_follow_cap: int = 200
    proxy_follow_idle_s: float = 86_400.0
    # issue 10: several stream/fetcher workers share the symbols by Redis leases, and one
    # exchange IP's budget (request weight, connection attempts) is kept in Redis
    leases: bool = False
    lease_ttl_ms: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        if url := env.get("LIVECANDLE_REDIS_URL"):
            kw["redis_url"] = url
        if flag := env.get("LIVECANDLE_REDIS_CLUSTER"):
            kw["redis_cluster"] = flag.lower() in ("1", "true", "yes")
        if prefix := env.get("LIVECANDLE_KEY_PREFIX"):
            kw["key_prefix"] = prefix
        if symbols := env.get("LIVECANDLE_SYMBOLS"):
            kw["symbols"], kw["symbol_patterns"] = parse_symbol_spec(symbols, "LIVECANDLE_SYMBOLS")
        if period := env.get("LIVECANDLE_UNIVERSE_PERIOD_S"):
            kw["universe_period_s"] = float(_int("LIVECANDLE_UNIVERSE_PERIOD_S", period, 1, 86_400))
        if intervals := env.get("LIVECANDLE_INTERVALS"):
            kw["intervals"] = parse_intervals(intervals, "LIVECANDLE_INTERVALS")
        if rest := env.get("LIVECANDLE_BINANCE_REST_URL"):
            kw["binance_rest_url"] = rest.rstrip("/")
        if ws := env.get("LIVECANDLE_BINANCE_WS_URL"):
            kw["binance_ws_url"] = ws.rstrip("/")
        if host := env.get("LIVECANDLE_HOST"):
            kw["host"] = host
        if port := env.get("LIVECANDLE_PORT"):
            kw["port"] = _int("LIVECANDLE_PORT", port, 0, 65535)
        if token := env.get("LIVECANDLE_WRITE_TOKEN"):
            kw["write_token"] = token
        if data_dir := env.get("LIVECANDLE_DATA_DIR"):
            kw["data_dir"] = data_dir
        if n := env.get("LIVECANDLE_BACKFILL_CANDLES"):
            kw["backfill_candles"] = _int("LIVECANDLE_BACKFILL_CANDLES", n, 1, 10_000_000)
        if publish := env.get("LIVECANDLE_LIVE_PUBLISH_PERIOD_MS"):
            kw["live_publish_period_ms"] = _int(
                "LIVECANDLE_LIVE_PUBLISH_PERIOD_MS", publish, 1, 60_000
            )
        if silence := env.get("LIVECANDLE_STREAM_SILENCE_S"):
            kw["stream_silence_s"] = float(_int("LIVECANDLE_STREAM_SILENCE_S", silence, 1, 3600))
        if period := env.get("LIVECANDLE_LIVE_WRITE_PERIOD_MS"):
            kw["live_write_period_ms"] = _int("LIVECANDLE_LIVE_WRITE_PERIOD_MS", period, 1, 60_000)
        if n := env.get("LIVECANDLE_REST_MAX_IN_FLIGHT"):
            kw["rest_max_in_flight"] = _int("LIVECANDLE_REST_MAX_IN_FLIGHT", n, 1, 64)
        if n := env.get("LIVECANDLE_FETCHER_NICE"):
            kw["fetcher_nice"] = _int("LIVECANDLE_FETCHER_NICE", n, 0, 19)
        # issue 14: realtime limits
        if n := env.get("LIVECANDLE_REALTIME_MAX_QUEUE"):
            kw["realtime_max_queue"] = _int("LIVECANDLE_REALTIME_MAX_QUEUE", n, 1, 1_000_000)
        if n := env.get("LIVECANDLE_REALTIME_STALL_S"):
            kw["realtime_stall_s"] = float(_int("LIVECANDLE_REALTIME_STALL_S", n, 1, 3600))
        # issue 14: web limits
        if origins := env.get("LIVECANDLE_CORS_ORIGINS"):
            kw["cors_origins"] = _split(origins)
        if ws_max := env.get("LIVECANDLE_WS_MAX_BYTES"):
            kw["ws_max_bytes"] = _int("LIVECANDLE_WS_MAX_BYTES", ws_max, 1024, 16 << 20)
        if header := env.get("LIVECANDLE_HEADER_TIMEOUT_S"):
            kw["header_timeout_s"] = float(_int("LIVECANDLE_HEADER_TIMEOUT_S", header, 1, 3600))
        if entries := env.get("LIVECANDLE_READ_CACHE_ENTRIES"):
            kw["read_cache_entries"] = _int("LIVECANDLE_READ_CACHE_ENTRIES", entries, 1, 10_000_000)
        # issue 14: redis limits
        if n := env.get("LIVECANDLE_REDIS_MAX_CONNECTIONS"):
            kw["redis_max_connections"] = _int("LIVECANDLE_REDIS_MAX_CONNECTIONS", n, 2, 100_000)
        if timeout := env.get("LIVECANDLE_REDIS_TIMEOUT_S"):
            kw["redis_timeout_s"] = float(_int("LIVECANDLE_REDIS_TIMEOUT_S", timeout, 1, 600))
        # issue 13: per-address and per-client limits
        for name, attr, high in (
            ("LIVECANDLE_CONNECTIONS_PER_IP", "connections_per_ip", 1_000_000),
            ("LIVECANDLE_REQUESTS_PER_IP", "requests_per_ip", 100_000),
            ("LIVECANDLE_QUEUED_REQUESTS_PER_IP", "queued_requests_per_ip", 1_000_000),
            ("LIVECANDLE_SOCKETIO_SESSIONS_PER_IP", "socketio_sessions_per_ip", 1_000_000),
            ("LIVECANDLE_SOCKETIO_MESSAGES_PER_S", "socketio_messages_per_s", 100_000),
            ("LIVECANDLE_SOCKETIO_MAX_ROOMS", "socketio_max_rooms", 1_000_000),
        ):
            if n := env.get(name):
                kw[attr] = _int(name, n, 0, high)
        # issue 11: the Binance proxy
        if flag := env.get("LIVECANDLE_PROXY_FORWARD_SIGNED"):
            kw["proxy_forward_signed"] = flag.lower() in ("1", "true", "yes")
        if url := env.get("LIVECANDLE_BINANCE_FAPI_URL"):
            kw["binance_fapi_url"] = url.rstrip("/")
        if url := env.get("LIVECANDLE_BINANCE_DAPI_URL"):
            kw["binance_dapi_url"] = url.rstrip("/")
        if n := env.get("LIVECANDLE_PROXY_INFO_PERIOD_S"):
            kw["proxy_info_period_s"] = float(_int("LIVECANDLE_PROXY_INFO_PERIOD_S", n, 1, 86_400))
        if n := env.get("LIVECANDLE_PROXY_FOLLOW_CAP"):
            kw["proxy_follow_cap"] = _int("LIVECANDLE_PROXY_FOLLOW_CAP", n, 0, 100_000)
        if n := env.get("LIVECANDLE_PROXY_FOLLOW_IDLE_S"):
            kw["proxy_follow_idle_s"] = float(
                _int("LIVECANDLE_PROXY_FOLLOW_IDLE_S", n, 1, 365 * 86_400)
            )
        if flag := env.get("LIVECANDLE_LEASES"):
            kw["leases"] = flag.lower() in ("1", "true", "yes")
        if ttl := env.get("LIVECANDLE_LEASE_TTL_MS"):
            kw["lease_ttl_ms"] = _int("LIVECANDLE_LEASE_TTL_MS", ttl, 1_000, 600_000)
        return cls(**kw)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def series(self) -> tuple[SeriesKey, ...]:
        """The series of the explicitly named symbols (patterns add theirs at run time)."""
        return tuple(SeriesKey(s, i) for s in self.symbols for i in self.intervals)

    @property
    def selection(self) -> Selection:
        return Selection(self.symbols, self.symbol_patterns)


def parse_symbol_spec(text: str, name: str = "symbols") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``LIVECANDLE_SYMBOLS``: explicit names and patterns, comma-separated, in any mix
    (``BTCUSDT,ETHUSDT``, ``*``, ``*USDT,BTCEUR``); returns (names, patterns)."""
    items = tuple(s.upper() for s in _split(text))
    if not items:
        raise ConfigError(f"{name}={text!r} names no symbol")
    patterns = tuple(i for i in items if is_pattern(i))
    names = (
        parse_symbols(",".join(i for i in items if not is_pattern(i)), name)
        if len(patterns) < len(items)
        else ()
    )
    try:
        Selection.parse(patterns)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None
    return names, tuple(dict.fromkeys(patterns))


def parse_symbols(text: str, name: str = "symbols") -> tuple[str, ...]:
    symbols = tuple(s.upper() for s in _split(text))
    if not symbols:
        raise ConfigError(f"{name}={text!r} names no symbol")
    try:
        for s in symbols:
            validate_symbol(s)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None
    return tuple(dict.fromkeys(symbols))


def parse_intervals(text: str, name: str = "intervals") -> tuple[Interval, ...]:
    names = _split(text)
    if not names:
        raise ConfigError(f"{name}={text!r} names no interval")
    try:
        return tuple(dict.fromkeys(parse_interval(n) for n in names))
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None
