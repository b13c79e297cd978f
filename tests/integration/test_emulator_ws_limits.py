"""The emulator enforces Binance's websocket limits, so the service's behaviour under them
can be tested, and counts every violation."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import EmulatorProcess


async def answers(ws: websockets.ClientConnection, timeout_s: float) -> list[dict[str, object]]:
    """Every control answer (messages with an ``id``) arriving within ``timeout_s``."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
        if "id" in msg:
            out.append(msg)
    return out


def violations(emu: EmulatorProcess) -> dict[str, int]:
    counts: dict[str, int] = emu.state()["streams"]["violations"]
    return counts


async def test_a_subscribe_over_4_kb_is_ignored_without_an_answer(
    emulator: EmulatorProcess,
) -> None:
    big = [f"s{i:04d}usdt@aggTrade" for i in range(220)]  # about 4.6 KB of JSON
    assert len(json.dumps({"method": "SUBSCRIBE", "params": big, "id": 1})) > 4096
    async with websockets.connect(emulator.ws_url + "/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": big, "id": 1}))
        assert await answers(ws, 1.0) == []
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": big[:150], "id": 2}))
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        got = await answers(ws, 2.0)
    assert got[0] == {"result": None, "id": 2}
    assert got[1]["result"] == sorted(big[:150])  # nothing of the ignored message
    assert violations(emulator)["oversized_ignored"] == 1


async def test_more_than_1024_streams_on_a_connection_are_refused(
    emulator: EmulatorProcess,
) -> None:
    names = [f"x{i}usdt@aggTrade" for i in range(1025)]
    batches = [names[i : i + 170] for i in range(0, 1025, 170)]  # each under 4 KB
    async with websockets.connect(emulator.ws_url + "/ws") as ws:
        got = []
        for i, batch in enumerate(batches):
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": batch, "id": i}))
            got += await answers(ws, 0.3)  # paced under 5 messages a second
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 99}))
        got += await answers(ws, 1.0)
    assert [a.get("result", "error") for a in got[:-1]] == [None] * 6 + ["error"]
    assert "code" in got[6]
    assert len(got[-1]["result"]) == 1020  # type: ignore[arg-type]
    assert violations(emulator)["too_many_streams"] == 1


async def test_five_messages_a_second_are_fine_and_six_disconnect(
    emulator: EmulatorProcess,
) -> None:
    async with websockets.connect(emulator.ws_url + "/ws") as ws:
        for i in range(5):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        assert len(await answers(ws, 1.2)) == 5
        assert violations(emulator)["rate_disconnects"] == 0
        with pytest.raises(ConnectionClosed):
            for i in range(6):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            await answers(ws, 1.0)
            await ws.recv()
    assert violations(emulator)["rate_disconnects"] == 1


async def test_the_301st_connection_attempt_in_5_minutes_gets_http_429(
    emulator: EmulatorProcess,
) -> None:
    for _ in range(300):
        async with websockets.connect(emulator.ws_url + "/ws/btcusdt@aggTrade"):
            pass
    assert violations(emulator)["attempts_refused"] == 0
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(emulator.ws_url + "/ws/btcusdt@aggTrade"):
            pass
    assert refused.value.response.status_code == 429
    assert violations(emulator)["attempts_refused"] == 1
    emulator.control(reset_limits=True)  # a new window
    async with websockets.connect(emulator.ws_url + "/ws/btcusdt@aggTrade") as ws:
        assert json.loads(await ws.recv())["e"] == "aggTrade"


@pytest.mark.parametrize(("compression", "mode"), [(None, "frames"), ("deflate", "protocol")])
async def test_messages_are_written_in_batches_of_frames_compressed_or_not(
    emulator: EmulatorProcess, compression: str | None, mode: str
) -> None:
    """Uncompressed frames are made by the emulator itself (the cheap path the whole
    market needs); compressed ones by websockets; both read back as Binance's events."""
    url = emulator.ws_url + "/stream?streams=btcusdt@aggTrade/btcusdt@kline_1s"
    async with websockets.connect(url, compression=compression) as ws:
        events = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(20)]
        writers = emulator.state()["streams"]["writers"]
    assert writers == {mode: 1}
    assert {e["stream"] for e in events} <= {"btcusdt@aggTrade", "btcusdt@kline_1s"}
    trades = [e["data"] for e in events if e["stream"] == "btcusdt@aggTrade"]
    assert trades and all(t["e"] == "aggTrade" and t["s"] == "BTCUSDT" for t in trades)
    ids = [t["a"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # none lost, none reordered


async def test_a_new_subscriber_gets_no_finals_of_candles_closed_before_it_came(
    emulator: EmulatorProcess,
) -> None:
    # the 1s candles of this stream had a subscriber once; while nobody listened,
    # seconds closed; a new subscriber gets finals only from now on, as on Binance
    url = emulator.ws_url + "/stream?streams=ethusdt@kline_1s"
    async with websockets.connect(url) as ws:
        await asyncio.wait_for(ws.recv(), 10)
    await asyncio.sleep(3)  # candles close while nobody listens (real seconds)
    async with websockets.connect(url) as ws:
        async with httpx.AsyncClient() as client:
            joined_ms = (await client.get(emulator.rest_url + "/api/v3/time")).json()["serverTime"]
        events = [json.loads(await asyncio.wait_for(ws.recv(), 10))["data"] for _ in range(4)]
    finals = [e["k"] for e in events if e["k"]["x"]]
    assert all(k["T"] >= joined_ms - 1000 for k in finals), finals
