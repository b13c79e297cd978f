"""The emulator answers klines requests in flight together one per turn of its event
loop (its ticker and websocket writers run between two answers), and each answer is the
same bytes as when asked alone."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from livecandle.emulator import Emulator, EmulatorConfig, build_app

DAY_MS = 86_400_000
# ten days before now: history, which never changes
HISTORY_END_MS = (int(time.time() * 1000) // DAY_MS - 10) * DAY_MS


def klines_scope(query: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/api/v3/klines",
        "query_string": query.encode(),
        "headers": [],
        "client": ("127.0.0.1", 50_000),
    }


async def ask(app: Any, query: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(klines_scope(query), receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


QUERIES = [
    f"symbol={symbol}&interval={interval}&endTime={HISTORY_END_MS}&limit=300"
    for symbol in ("BTCUSDT", "ETHUSDT")
    for interval in ("1m", "5m", "1h", "1d")
]


def test_klines_in_flight_together_are_answered_one_per_loop_turn_byte_for_byte() -> None:
    emulator = Emulator(EmulatorConfig(history_days=1100, clock_offset_ms=0))
    app = build_app(emulator)

    async def main() -> tuple[list[int], list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        loop = asyncio.get_running_loop()
        turns = 0

        def turn() -> None:  # once per pass of the loop over its ready callbacks
            nonlocal turns
            turns += 1
            loop.call_soon(turn)

        loop.call_soon(turn)
        answered_at: list[int] = []
        answer = emulator.answer

        def counted(*args: Any) -> Any:
            answered_at.append(turns)
            return answer(*args)

        emulator.answer = counted  # type: ignore[method-assign]
        together = await asyncio.gather(*(ask(app, q) for q in QUERIES))
        emulator.answer = answer  # type: ignore[method-assign]
        alone = [await ask(app, q) for q in QUERIES]
        return answered_at, together, alone

    answered_at, together, alone = asyncio.run(main())
    assert all(status == 200 for status, _ in together)
    assert together == alone  # the same bytes, in flight together or alone
    assert all(body.startswith(b"[[") for _, body in together)
    assert len(answered_at) == len(QUERIES)
    # no two answers in one turn: the loop went round between each two
    assert all(b > a for a, b in itertools.pairwise(answered_at))
