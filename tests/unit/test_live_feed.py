"""LiveFeed on hand-made frames: ordering, bad input, seeding. No network needed: the REST
client is never called in these cases."""

from __future__ import annotations

import msgspec

from livecandle.clock import ManualClock
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.intervals import INTERVALS
from livecandle.live_feed import LiveFeed
from livecandle.model import Trade
from livecandle.sequencer import Offer, TradeSequencer

T0 = 1_700_000_100_000


def agg(a: int, price: str = "100.00000000", t: int = T0, f: int | None = None, n: int = 1) -> str:
    f = a * 10 if f is None else f
    return msgspec.json.encode(
        {
            "stream": "btcusdt@aggTrade",
            "data": {
                "e": "aggTrade",
                "E": t,
                "s": "BTCUSDT",
                "a": a,
                "p": price,
                "q": "1.00000000",
                "f": f,
                "l": f + n - 1,
                "T": t,
                "m": False,
                "M": True,
            },
        }
    ).decode()


def feed() -> LiveFeed:
    return LiveFeed(
        ["BTCUSDT"], [INTERVALS["1m"]], BinanceRest("http://127.0.0.1:9"), ManualClock(T0)
    )


def test_malformed_frames_are_counted_and_change_nothing() -> None:
    f = feed()
    f.handle(agg(1))
    for bad in [
        "{",
        "[]",
        '{"stream":"x","data":{"e":"aggTrade","s":"BTCUSDT"}}',
        agg(2, price="abc"),
        b"\xff\xfe",
        agg(3, price="1.123456789"),
    ]:
        f.handle(bad)
    st = f.states["BTCUSDT"]
    assert f.bad_messages == 6
    assert st.sequencer.last_id == 1
    forming = st.builder.forming(0)
    assert forming is not None and forming.trades == 1


def test_unknown_event_types_and_replies_are_ignored_quietly() -> None:
    f = feed()
    f.handle('{"result":null,"id":1}')
    f.handle('{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}')
    f.handle('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}')
    assert f.bad_messages == 0 and f.unknown_events == 1


def test_duplicates_are_dropped_by_id() -> None:
    f = feed()
    for a in (1, 2, 2, 3, 1):
        f.handle(agg(a))
    st = f.states["BTCUSDT"]
    forming = st.builder.forming(0)
    assert forming is not None and forming.trades == 3
    assert st.sequencer.duplicates == 2


def test_sequencer_holds_trades_after_a_gap_until_it_is_filled() -> None:
    s = TradeSequencer()

    def t(a: int) -> Trade:
        return Trade(a, 1, 1, a, a, T0 + a, False)

    assert s.offer(t(1)) is Offer.NEXT
    assert s.offer(t(4)) is Offer.GAP
    assert s.offer(t(5)) is Offer.HELD
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (2, 3)
    out = s.resolve([t(2)])  # a short fetch: 3 still missing
    assert [x.agg_id for x in out] == [2]
    assert s.gap is not None and (s.gap.first_id, s.gap.last_id) == (3, 3)
    out = s.resolve([t(3), t(4)])
    assert [x.agg_id for x in out] == [3, 4, 5]
    assert s.gap is None and s.recovered == 2


def test_seed_from_a_snapshot_on_an_agg_trade_boundary() -> None:
    f = feed()
    open_ms = INTERVALS["1m"].open_of(T0)
    f.handle(agg(1, "100.00000000", T0 + 1000, f=10))
    f.handle(agg(2, "101.00000000", T0 + 2000, f=11))
    f.handle(agg(3, "102.00000000", T0 + 3000, f=12))
    st = f.states["BTCUSDT"]
    assert not st.builder.is_complete(0)
    # the exchange saw 5 earlier trades too; its snapshot ends at trade id 11 (aggTrade 2)
    f.handle(
        msgspec.json.encode(
            {
                "stream": "btcusdt@kline_1m",
                "data": {
                    "e": "kline",
                    "E": T0 + 2500,
                    "s": "BTCUSDT",
                    "k": {
                        "t": open_ms,
                        "T": open_ms + 59_999,
                        "s": "BTCUSDT",
                        "i": "1m",
                        "f": 3,
                        "L": 11,
                        "o": "99.00000000",
                        "c": "101.00000000",
                        "h": "101.00000000",
                        "l": "98.00000000",
                        "v": "7.00000000",
                        "n": 9,
                        "x": False,
                        "q": "700.00000000",
                        "V": "3.00000000",
                        "Q": "300.00000000",
                        "B": "0",
                    },
                },
            }
        )
    )
    assert st.builder.is_complete(0)
    c = st.builder.forming(0)
    assert c is not None
    assert (c.open, c.close, c.low, c.trades) == (99 * 10**8, 102 * 10**8, 98 * 10**8, 10)
