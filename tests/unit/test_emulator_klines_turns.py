"""The emulator answers klines requests in flight together one per turn of its event
loop (its ticker and websocket writers run between two answers), and each answer is the
same bytes as when asked alone; the trades up to a request go out before its answer is
computed."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from livecandle.emulator import Emulator, EmulatorConfig, build_app
from livecandle.emulator.streams import Conn

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


class FakeSocket:
    """What an outbox's writer needs of a websocket: where its messages go."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}
        self.sent: list[str] = []

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["text"])


def test_trades_up_to_a_klines_request_are_written_before_its_answer_is_computed() -> None:
    emulator = Emulator(EmulatorConfig(history_days=30, rate_per_s=400.0))
    app = build_app(emulator)
    assert emulator.hub is not None
    hub = emulator.hub

    async def main() -> tuple[int, list[str]]:
        socket = FakeSocket()
        conn = Conn(socket, combined=False)  # type: ignore[arg-type]
        hub._subscribe(conn, ["btcusdt@aggTrade"])
        writer = asyncio.create_task(conn.outbox.run(socket))  # type: ignore[arg-type]
        _, new = emulator.advance()  # the market up to now, before the trades to come
        hub.publish(new)
        await asyncio.sleep(0.3)  # ~120 trades of BTCUSDT, not sent yet: no ticker runs
        written_before: list[int] = []
        handle = emulator._handle

        def counted(*args: Any) -> Any:
            written_before.append(len(socket.sent))
            return handle(*args)

        emulator._handle = counted  # type: ignore[method-assign]
        status, _ = await ask(app, QUERIES[0])
        assert status == 200
        conn.close()
        await writer
        return written_before[0], socket.sent

    written_before, sent = asyncio.run(main())
    assert len(sent) > 20
    # all but the trades of the instant between the two were out before the answer
    # (before, none of the ~120 were)
    assert written_before >= len(sent) * 0.9


def test_each_ticks_trades_are_written_before_its_kline_updates_are_computed() -> None:
    emulator = Emulator(EmulatorConfig(history_days=30, rate_per_s=400.0))
    build_app(emulator)
    assert emulator.hub is not None
    hub = emulator.hub

    async def main() -> tuple[list[int], int]:
        socket = FakeSocket()
        conn = Conn(socket, combined=False)  # type: ignore[arg-type]
        hub._subscribe(conn, ["btcusdt@aggTrade"])
        writer = asyncio.create_task(conn.outbox.run(socket))  # type: ignore[arg-type]
        waiting: list[int] = []  # trades not yet written when the kline feed's turn came
        updates = hub.klines.updates

        def counted(*args: Any) -> None:
            waiting.append(len(conn.outbox.items))
            updates(*args)

        hub.klines.updates = counted  # type: ignore[method-assign]
        await hub.start()
        await asyncio.sleep(0.5)
        await hub.stop()
        conn.close()
        await writer
        return waiting, len(socket.sent)

    waiting, sent = asyncio.run(main())
    assert len(waiting) > 10
    assert sent > 100  # ~4 trades a tick
    # only trades of the instant between the writers' turn and the feed's were left
    # (before, every tick's: nearly all of them)
    assert sum(waiting) < sent / 10
