"""The emulator's fault switches: what a test can break on purpose, all off by default."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Faults:
    """Fault switches, all off by default."""

    fail_rate: float = 0.0  # share of REST requests answered with HTTP 5xx
    skip_rate: float = 0.0  # share of aggTrade messages never sent on websockets
    max_connection_age_s: float = 86_400.0  # Binance cuts each connection at 24 h
    stalled: dict[str, float] = field(default_factory=dict)  # symbol -> until (loop time, s)
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    # Binance's REST lags just after a close: for this long after each close, klines
    # answer the just-closed rows as computed from the trades up to ``stale_cut_ms``
    # before the close (fewer trades, an older close price); 0: off
    stale_klines_ms: int = 0
    stale_cut_ms: int = 500
