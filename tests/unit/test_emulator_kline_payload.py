"""The kline stream's event is Binance's: every field of the aggregate, the amounts with
8 decimals (quotes rounded half to even from 1e-16), the keys in Binance's order. The
expected text is built here with ``Decimal``, independently of the emulator's formatting."""

from __future__ import annotations

import json
import random
from decimal import ROUND_HALF_EVEN, Decimal

from livecandle.domain.intervals import INTERVALS
from livecandle.emulator.kline_feed import KlineSeries, kline_payload
from livecandle.emulator.market import SymbolMarket


def amount(units: int, scale: int = 10**8) -> str:
    d = (Decimal(units) / scale).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)
    return f"{d:.8f}"


def test_kline_events_are_binance_s_text_for_any_amounts() -> None:
    sm = SymbolMarket("BTCUSDT", 1, 1_700_000_000_000, history_days=1)
    rng = random.Random(7)
    for _ in range(3000):
        name = rng.choice(["1m", "5m", "1h", "1d", "1w", "1M"])
        interval = INTERVALS[name]
        s = KlineSeries(f"btcusdt@kline_{name}", "BTCUSDT", interval)
        agg = [rng.randrange(10 ** rng.randrange(1, 19)) for _ in range(11)]
        agg[5] = rng.choice([rng.randrange(10 ** rng.randrange(1, 30)), 5 * 10**7, 15 * 10**7])
        agg[8] = rng.choice([rng.randrange(10 ** rng.randrange(1, 30)), 25 * 10**7])
        agg[9], agg[10] = rng.choice([(-1, -1), (agg[9], agg[10])])
        open_ms = interval.open_of(rng.randrange(10**12, 2 * 10**12))
        now_ms = open_ms + rng.randrange(10**6)
        final = rng.random() < 0.5
        text = kline_payload(s, sm, agg, open_ms, now_ms, final)
        o, h, low, c, v, q, n, tv, tq, f, last = agg
        k = (
            f'{{"t":{open_ms},"T":{interval.next_open(open_ms) - 1},"s":"BTCUSDT","i":"{name}",'
            f'"f":{f},"L":{last},"o":"{amount(o)}","c":"{amount(c)}","h":"{amount(h)}",'
            f'"l":"{amount(low)}","v":"{amount(v)}","n":{n},"x":{json.dumps(final)},'
            f'"q":"{amount(q, 10**16)}","V":"{amount(tv)}","Q":"{amount(tq, 10**16)}","B":"0"}}'
        )
        assert text == f'{{"e":"kline","E":{now_ms},"s":"BTCUSDT","k":{k}}}'
