"""The web's pub/sub at 00:00 UTC: a burst of ``klines_updated`` notices (one per series
stored; the whole market's 9,600 at once) does not hold the live batches back. Real Redis."""

from __future__ import annotations

import asyncio

import msgspec
import redis.asyncio as aioredis

from livecandle.domain.clock import SystemClock
from livecandle.domain.intervals import INTERVALS
from livecandle.store import Store
from livecandle.web.realtime import Realtime, _Batch


async def test_a_live_batch_is_not_held_behind_a_burst_of_notices(redis: aioredis.Redis) -> None:
    store = Store(redis)
    realtime = Realtime(store, ["BTCUSDT"], [INTERVALS["1m"]], SystemClock())
    handled_after: list[int] = []  # messages received when the live batch was handled
    handled = asyncio.Event()
    queue_batch = realtime._queue_batch

    def recorded(batch: _Batch) -> None:
        handled_after.append(realtime.received)
        handled.set()
        queue_batch(batch)

    realtime._queue_batch = recorded  # type: ignore[method-assign]
    listening = asyncio.create_task(realtime.listen())
    keys = store.keys
    try:
        async with asyncio.timeout(10):
            await realtime.listening.wait()  # Redis confirmed both subscriptions
            notice = b'{"symbol":"ETHUSDT","interval":"1m","latest":1,"count":1}'
            live = msgspec.json.encode({"time": 1, "prices": [], "candles": []})
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(5_000):
                    pipe.publish(keys.klines_updated_channel, notice)
                pipe.publish(keys.live_channel, live)
                await pipe.execute()
            await handled.wait()
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    assert len(handled_after) == 1
    assert handled_after[0] < 1_000  # not after the 5,000 notices published before it
