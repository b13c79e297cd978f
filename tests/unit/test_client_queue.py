"""A socket.io client's outgoing queue: newest state coalesced, bounded, stalls noticed."""

from __future__ import annotations

from engineio.packet import CLOSE, MESSAGE
from engineio.packet import Packet as EngineIOPacket

from livecandle.web.client_queue import LATEST_PER_PACKET, ClientQueue, LatestPacket


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def queue(max_packets: int = 4, stall_s: float = 5.0) -> tuple[ClientQueue, list[str], Clock]:
    slow: list[str] = []
    clock = Clock()
    return ClientQueue(max_packets, stall_s, lambda q, why: slow.append(why), clock), slow, clock


async def test_a_newer_state_of_a_room_replaces_the_queued_one_in_its_place() -> None:
    q, slow, _ = queue()
    q.put_nowait(LatestPacket("a1", ("live_candle", "A")))
    q.put_nowait(EngineIOPacket(MESSAGE, "other"))
    q.put_nowait(LatestPacket("a2", ("live_candle", "A")))
    q.put_nowait(LatestPacket("b1", ("live_candle", "B")))
    assert q.qsize() == 3
    assert [q.get_nowait().data for _ in range(3)] == ["a2", "other", "b1"]
    for _ in range(3):
        q.task_done()
    await q.join()  # every packet put is accounted for once, coalesced or not
    q.put_nowait(LatestPacket("a3", ("live_candle", "A")))  # A was sent: queued anew
    assert q.get_nowait().data == "a3"
    assert slow == []


async def test_a_full_queue_marks_the_client_slow_once_and_keeps_nothing_more() -> None:
    q, slow, _ = queue(max_packets=2)
    q.put_nowait(EngineIOPacket(MESSAGE, "1"))
    q.put_nowait(EngineIOPacket(MESSAGE, "2"))
    q.put_nowait(EngineIOPacket(MESSAGE, "3"))
    q.put_nowait(EngineIOPacket(MESSAGE, "4"))
    assert q.qsize() == 2 and q.slow
    assert slow == ["2 packets waiting"]
    q.put_nowait(EngineIOPacket(CLOSE))  # engine.io's end of stream still goes through
    q.put_nowait(None)
    assert q.qsize() == 4
    q.discard()
    assert q.get_nowait() is None  # the writer wakes up and ends


async def test_a_client_that_takes_nothing_for_the_stall_time_is_slow() -> None:
    q, slow, clock = queue(max_packets=100, stall_s=5.0)
    q.put_nowait(LatestPacket("a1", "A"))
    clock.now_s += 4.0
    q.put_nowait(LatestPacket("a2", "A"))
    q.get_nowait()  # it drains: the stall starts again
    q.put_nowait(LatestPacket("a3", "A"))
    clock.now_s += 4.0
    q.put_nowait(LatestPacket("a4", "A"))
    assert slow == []
    clock.now_s += 1.5
    q.put_nowait(LatestPacket("a5", "A"))
    assert slow == ["took nothing for 5 s"]


async def test_a_client_in_many_rooms_takes_one_burst_of_their_newest_states() -> None:
    q, slow, _ = queue(max_packets=2)
    for room in range(100):  # one flush: the newest state of each of 100 rooms
        q.put_nowait(LatestPacket(f"s{room}", ("live_candle", room)))
    assert q.qsize() == 100 and slow == []
    q.put_nowait(EngineIOPacket(MESSAGE, "ack"))  # other packets still have their bound
    q.put_nowait(EngineIOPacket(MESSAGE, "ack"))
    assert slow == []
    q.put_nowait(EngineIOPacket(MESSAGE, "ack"))
    assert slow == ["2 packets waiting"]


async def test_more_rooms_waiting_than_any_client_can_be_in_is_slow() -> None:
    q, slow, _ = queue(max_packets=1)
    for room in range(LATEST_PER_PACKET + 1):
        q.put_nowait(LatestPacket("s", room))
    assert slow == [f"{LATEST_PER_PACKET} rooms' updates waiting"]


async def test_a_symbol_s_rooms_go_in_the_order_of_their_newest_states() -> None:
    """A lagging client (or one that polls) holds a price, a candle whose close is older
    than the next price, then that next price: it gets the candle, then the price, not
    the newer price in the older one's place ahead of the candle (its close shown last).
    Another symbol's place in the queue holds."""
    q, slow, _ = queue()
    q.put_nowait(LatestPacket("price a0", ("live_price", "BTC"), "BTC"))
    q.put_nowait(LatestPacket("eth price", ("live_price", "ETH"), "ETH"))
    q.put_nowait(LatestPacket("candle a0", ("live_candle", "BTC:1m"), "BTC"))
    q.put_nowait(LatestPacket("price a1", ("live_price", "BTC"), "BTC"))
    assert q.qsize() == 3
    got = [q.get_nowait().data for _ in range(3)]
    assert got == ["candle a0", "price a1", "eth price"]
    assert q.empty()
    for _ in range(3):
        q.task_done()
    await q.join()  # three packets put (one replaced): three taken
    q.put_nowait(LatestPacket("candle a1", ("live_candle", "BTC:1m"), "BTC"))
    assert q.get_nowait().data == "candle a1"  # the group was taken whole: queued anew
    assert slow == []
