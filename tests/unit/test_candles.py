"""The merge rule of the live side (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from livecandle.web.candles import live_parts

MIN = 60_000


def c(t: int, close: str = "1") -> dict[str, Any]:
    return {"time": t, "open": "1", "high": "2", "low": "0.5", "close": close, "volume": "1"}


def enc(v: Any) -> bytes:
    return msgspec.json.encode(v)


def test_every_unconfirmed_closed_candle_after_latest_then_the_forming_one() -> None:
    closed = [enc(c(t)) for t in (1 * MIN, 2 * MIN, 3 * MIN)]
    live = enc({**c(4 * MIN), "previous": c(3 * MIN, close="1.5")})
    parts = live_parts(live, 1 * MIN, closed)
    assert [(p["time"], p["state"]) for p in parts] == [
        (2 * MIN, "unconfirmed"),
        (3 * MIN, "unconfirmed"),
        (4 * MIN, "forming"),
    ]
    assert parts[1]["close"] == "1.5"  # previous is the newer copy of the 3rd candle
    assert "previous" not in parts[-1]


def test_nothing_at_or_before_latest_and_bad_values_are_skipped() -> None:
    closed = [b"not json", enc([1, 2]), enc(c(5 * MIN)), enc({"time": "x"})]
    live = enc({**c(6 * MIN), "previous": None})
    assert [p["time"] for p in live_parts(live, 5 * MIN, closed)] == [6 * MIN]
    assert live_parts(None, None, []) == []
    assert live_parts(b"[]", None, None) == []
    assert [p["state"] for p in live_parts(None, None, [enc(c(MIN))])] == ["unconfirmed"]
