"""The weight plan in the service's status: /healthz's exchange part and /metrics show
the queue and what was sent per priority."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from livecandle.config import Settings, parse_intervals
from livecandle.exchange.binance.weights import Priority
from livecandle.runtime.serve import store_for
from livecandle.runtime.service import Service


async def test_health_and_metrics_show_the_queue_per_priority(redis: aioredis.Redis) -> None:
    settings = Settings(symbols=("BTCUSDT",), intervals=parse_intervals("1m"))
    service = Service(settings, store_for(redis, settings), {"web"})
    budget = service.rest.budget
    budget.max_in_flight = 1
    try:
        async with budget.sending(2, Priority.CLOSED):  # one in flight: the rest queue
            waiting = [
                asyncio.create_task(budget.acquire(2, Priority.HISTORY)),
                asyncio.create_task(budget.acquire(2, Priority.HISTORY)),
                asyncio.create_task(budget.acquire(4, Priority.GAP_FILL)),
            ]
            for _ in range(10):
                await asyncio.sleep(0)
            plan = service.health()["exchange"]["plan"]
            metrics = service.metrics()
        await asyncio.gather(*waiting)
    finally:
        await service.stop()
    assert plan["priorities"]["history"]["queued"] == 2
    assert plan["priorities"]["gap_fill"]["queued_weight"] == 4
    assert plan["priorities"]["closed"]["sent"] == 1
    assert plan["in_flight"] == 1
    assert 'livecandle_rest_queue{priority="history"} 2' in metrics
    assert 'livecandle_rest_queue_weight{priority="gap_fill"} 4' in metrics
    assert 'livecandle_rest_sent_total{priority="closed"} 1' in metrics
    assert 'livecandle_rest_weight_sent_total{priority="closed"} 2' in metrics
    assert any(
        m.startswith('livecandle_rest_queue_oldest_wait_ms{priority="history"}') for m in metrics
    )
    assert any(m.startswith("livecandle_rest_weight_per_second ") for m in metrics)


async def test_health_and_metrics_show_the_connection_attempt_budget(
    redis: aioredis.Redis,
) -> None:
    settings = Settings(symbols=("BTCUSDT",), intervals=parse_intervals("1m"))
    service = Service(settings, store_for(redis, settings), {"stream"})
    assert service.stream is not None
    try:
        await service.stream.attempts.take()  # as a connect would
        attempts = service.health()["stream"]["connection_attempts"]
        metrics = service.metrics()
    finally:
        await service.stop()
    assert attempts["attempts"] == 1 and attempts["used"] == 1
    assert attempts["allowed"] == 270 and attempts["window_s"] == 300.0
    assert "livecandle_stream_connection_attempts_total 1" in metrics
    assert "livecandle_stream_connection_attempts_used 1" in metrics
    assert "livecandle_stream_connection_attempts_waiting 0" in metrics
