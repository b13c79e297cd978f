"""Binance's websocket limits as the client keeps them: message sizes, URL lengths,
staggered rotations and the connection-attempt budget (no sockets here)."""

from __future__ import annotations

import asyncio
import itertools
import random

import msgspec

from livecandle.exchange.binance.stream_limits import (
    MemoryConnectionAttempts,
    control_messages,
    rotation_age_s,
    url_streams,
)

INTERVALS = ("1m", "3m", "5m", "15m", "1h", "4h")


def long_streams(symbols: int = 1600) -> list[str]:
    """1,600 symbols named like 1000SATSFDUSD, each with aggTrade and 6 kline streams."""
    names = [f"1000sats{i:04d}fdusd" for i in range(symbols)]
    return [
        stream
        for name in names
        for stream in [f"{name}@aggTrade", *(f"{name}@kline_{i}" for i in INTERVALS)]
    ]


def test_subscribe_messages_for_the_whole_market_stay_under_4_kb() -> None:
    streams = long_streams()
    assert len(streams) == 11_200
    # what counting 200 streams a message would have sent: far above what Binance takes
    assert len(msgspec.json.encode({"method": "SUBSCRIBE", "params": streams[:200]})) > 5_000
    messages = control_messages("SUBSCRIBE", streams, itertools.count(1))
    decoded = [msgspec.json.decode(m) for m in messages]
    assert max(len(m.encode()) for m in messages) <= 3_500
    assert [s for d in decoded for s in d["params"]] == streams  # all, once, in order
    assert [d["id"] for d in decoded] == list(range(1, len(messages) + 1))
    assert {d["method"] for d in decoded} == {"SUBSCRIBE"}
    # and no more messages than the size needs
    assert len(messages) <= len(msgspec.json.encode(streams)) // 3_000 + 1


def test_a_stream_name_longer_than_a_message_still_goes_alone() -> None:
    huge = "x" * 5_000 + "@aggTrade"
    messages = control_messages(
        "UNSUBSCRIBE", ["a@aggTrade", huge, "b@aggTrade"], itertools.count()
    )
    assert [msgspec.json.decode(m)["params"] for m in messages] == [
        ["a@aggTrade"],
        [huge],
        ["b@aggTrade"],
    ]


def test_urls_stay_short() -> None:
    streams = long_streams(100)
    base = "wss://data-stream.binance.vision:443/stream"
    n = url_streams(base, streams, 2_000)
    url = f"{base}?streams={'/'.join(streams[:n])}"
    assert len(url) <= 2_000 < len(f"{base}?streams={'/'.join(streams[: n + 1])}")
    assert url_streams(base, streams[:3], 2_000) == 3
    assert url_streams(base, ["y" * 3_000], 2_000) == 1  # one at least


def test_rotations_of_many_connections_are_spread_over_the_hours_before_the_cut() -> None:
    after_s, spread_s = 23.5 * 3600, 3 * 3600
    rng = random.Random(5)
    ages = sorted(rotation_age_s(i, after_s, spread_s, rng) for i in range(12))
    assert after_s - spread_s - 60 <= ages[0] and ages[-1] <= after_s
    assert ages[-1] - ages[0] > 0.8 * spread_s  # over most of the spread
    gaps = [b - a for a, b in itertools.pairwise(ages)]
    assert min(gaps) > spread_s / 12 / 4  # no two together
    # deterministic per index, up to the jitter
    again = rotation_age_s(7, after_s, spread_s, random.Random(99))
    assert abs(again - rotation_age_s(7, after_s, spread_s, rng)) <= 60


def test_a_short_rotation_period_keeps_its_spread_within_it() -> None:
    ages = [rotation_age_s(i, 2.0, 3 * 3600) for i in range(5)]
    assert all(0.9 <= a <= 2.0 for a in ages)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s
        await asyncio.sleep(0)


async def test_the_attempt_budget_makes_a_burst_wait_and_never_exceeds_the_window() -> None:
    t = FakeTime()
    budget = MemoryConnectionAttempts(
        limit=5, window_s=10.0, safety=1.0, clock=t.clock, sleep=t.sleep
    )
    times: list[float] = []

    async def attempt() -> None:
        await budget.take()
        times.append(t.now)

    await asyncio.gather(*(attempt() for _ in range(12)))  # a cut of 12 connections
    assert len(times) == 12
    for start in times:  # any window of 10 s holds at most 5
        assert sum(start <= x < start + 10.0 for x in times) <= 5
    assert times[:5] == [1_000.0] * 5 and max(times) == 1_020.0
    stats = budget.stats()
    assert (stats["attempts"], stats["waiting"]) == (12, 0) and stats["waits"] >= 2
    assert stats["used"] == 2  # the last two, still within the window


def test_the_attempt_budget_keeps_a_margin_below_binance() -> None:
    budget = MemoryConnectionAttempts()
    assert budget.stats()["allowed"] == 270 and budget.stats()["limit"] == 300
