"""The emulator's test-only controls under ``/_emulator/``.

``GET /_emulator/state``: switches, counters and every symbol's state.
``POST /_emulator/state`` with a JSON object of changes, applied in order:
  ``{"weight_limit": 6000}``, ``{"enforce_weights": false}``, ``{"reset_limits": true}``
  (REST weights and websocket limit counters), ``{"stall": {"symbol": S, "seconds": 5}}``,
  ``{"drop_connections": true}``, ``{"storm_429_s": 5}`` (every request a 429 for that
  long), ``{"ban_s": 5}`` (every IP banned, 418), any fault switch (``{"skip_rate": 0.1}``...),
  ``{"list": "NEWUSDT"}`` or ``{"list": {"symbol": "NEWUSDT", "rank": 3}}`` (listed now),
  ``{"status": {"symbol": S, "status": "BREAK"}}`` (TRADING, BREAK, HALT, END_OF_DAY),
  ``{"delist": S}``, ``{"total_rate": 10000}`` (trades/s of the market, skewed; ``null``
  returns to per-symbol rates), ``{"rate": 5}`` (every symbol at 5 trades/s),
  ``{"ws_limits": {"max_streams": 1024, ...}}`` (fields of ``streams.WsLimits``).
``GET /_emulator/stats``: the counters only (cheap with thousands of symbols).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from livecandle.emulator.faults import Faults
from livecandle.emulator.gauges import GcPauses, LoopLag, RestCost
from livecandle.emulator.limits import WeightLimiter
from livecandle.emulator.schedule import Market, MarketError
from livecandle.emulator.streams import StreamHub


class Emulator(Protocol):
    """What the controls reach: the emulator's parts and counters."""

    market: Market
    faults: Faults
    limiter: WeightLimiter
    hub: StreamHub | None
    requests: int
    failed: int
    by_endpoint: dict[str, int]
    stale_rows: int
    loop_lag: LoopLag
    rest_cost: RestCost
    gc_pauses: GcPauses

    def now_ms(self) -> int: ...


_json = msgspec.json.Encoder()


def _error(message: str) -> Response:
    return Response(_json.encode({"error": message}), 400, media_type="application/json")


def _apply(emu: Emulator, name: str, value: Any) -> None:
    market = emu.market
    now = emu.now_ms()
    if name == "weight_limit":
        emu.limiter.limit = int(value)
    elif name == "enforce_weights":
        emu.limiter.enforce = bool(value)
    elif name == "reset_limits":
        emu.limiter.reset()
        if emu.hub is not None:
            emu.hub.reset_limits()
    elif name == "stall":  # {"symbol": "BTCUSDT", "seconds": 5}
        loop = asyncio.get_running_loop()
        emu.faults.stalled[value["symbol"]] = loop.time() + float(value["seconds"])
    elif name == "storm_429_s":  # every request a 429 for that long (issue 13)
        emu.limiter.storm_until_ms = now + int(float(value) * 1000)
    elif name == "ban_s":  # every IP banned (418) for that long
        emu.limiter.ban_until_ms = now + int(float(value) * 1000)
    elif name == "list":
        spec = {"symbol": value} if isinstance(value, str) else dict(value)
        rank = spec.get("rank")
        market.list_symbol(str(spec["symbol"]).upper(), now, None if rank is None else int(rank))
    elif name == "status":
        market.set_status(str(value["symbol"]).upper(), str(value["status"]), now)
    elif name == "delist":
        market.delist(str(value).upper(), now)
    elif name == "total_rate":
        market.set_total_rate(None if value is None else float(value), now)
    elif name == "rate":
        market.set_rate(float(value), now)
    elif name == "ws_limits":
        if emu.hub is None:
            raise MarketError("no websocket hub")
        for field_name, field_value in dict(value).items():
            if not hasattr(emu.hub.limits, field_name):
                raise MarketError(f"unknown websocket limit {field_name!r}")
            current = getattr(emu.hub.limits, field_name)
            setattr(emu.hub.limits, field_name, type(current)(field_value))
    elif hasattr(emu.faults, name) and name != "stalled":
        setattr(emu.faults, name, type(getattr(emu.faults, name))(value))
    else:
        raise MarketError(f"unknown switch {name!r}")


def stats(emu: Emulator) -> dict[str, Any]:
    market = emu.market
    return {
        "now_ms": emu.now_ms(),
        "symbols_listed": len(market.listings),
        "symbols_made": len(market.symbols.made),
        "trades_total": market.trades_total,
        "total_rate": market.total_rate,
        "rate_per_s": market.rate_per_s,
        "requests": emu.requests,
        "requests_by_endpoint": dict(emu.by_endpoint),
        "stale_rows": emu.stale_rows,
        "failed": emu.failed,
        "rejected_429": emu.limiter.rejected_429,
        "rejected_418": emu.limiter.rejected_418,
        "accepted_weight": emu.limiter.accepted_weight,
        "streams": emu.hub.stats() if emu.hub is not None else {},
        "loop_lag": emu.loop_lag.stats(),
        "rest_cost": emu.rest_cost.stats(),
        "gc": emu.gc_pauses.stats(),
    }


def state(emu: Emulator) -> dict[str, Any]:
    market = emu.market
    symbols = {}
    for symbol, listing in market.listings.items():
        sm = market.symbols[symbol]
        symbols[symbol] = {
            "status": listing.status,
            "rate_per_s": listing.rate_per_s,
            "live_trades": sm.live_trades,
            "last_agg_id": sm.last_agg_id,
            "listing_ms": sm.listing_ms,
            "live_start_ms": sm.live_start_ms,
        }
    return {
        **stats(emu),
        "faults": {k: v for k, v in asdict(emu.faults).items() if k != "stalled"},
        "stalled": sorted(emu.faults.stalled),
        "weight_limit": emu.limiter.limit,
        "enforce_weights": emu.limiter.enforce,
        "symbols": symbols,
    }


async def handle(emu: Emulator, request: Request) -> Response:
    if request.url.path.endswith("/stats"):
        return Response(_json.encode(stats(emu)), media_type="application/json")
    if request.method == "POST":
        changes = msgspec.json.decode(await request.body(), type=dict[str, Any])
        for name, value in changes.items():
            if name == "drop_connections":
                if emu.hub is not None and value:
                    await emu.hub.drop_all()
                continue
            try:
                _apply(emu, name, value)
            except (MarketError, KeyError, TypeError, ValueError) as e:
                return _error(str(e) if isinstance(e, MarketError) else f"{name}: {e!r}")
    return Response(_json.encode(state(emu)), media_type="application/json")
