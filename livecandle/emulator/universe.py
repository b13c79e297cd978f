"""The emulator's universe: synthetic symbol names and how trades are shared among symbols.

Names look like Binance's (a base asset and a quote asset, ``SOLUSDT``, ``PEPEFDUSD``,
``LINKBTC``) and are a pure function of the seed. Activity is skewed the way a real
market's is: symbol k (by rank) gets a share proportional to ``k ** -ZIPF_S`` times a
seeded log-normal factor, so a few symbols carry most trades and the long tail trades
rarely, some not for minutes.
"""

from __future__ import annotations

import math
import random

STATUSES = ("TRADING", "BREAK", "HALT", "END_OF_DAY")

ZIPF_S = 1.0
SPREAD = 1.5  # sigma of the log-normal factor on each symbol's share

# Real base assets, roughly by activity; generated ones follow when these run out.
_BASE_TEXT = (
    "BTC ETH BNB SOL XRP DOGE ADA TRX AVAX LINK DOT TON SHIB LTC BCH NEAR MATIC UNI ICP APT "
    "PEPE FET ETC FIL ARB OP ATOM XLM STX IMX INJ HBAR VET RNDR GRT SUI SEI TIA MKR AAVE "
    "LDO ALGO FTM SAND MANA AXS THETA EGLD FLOW CHZ XTZ EOS KAVA NEO IOTA ZEC DASH CAKE "
    "RUNE CRV SNX COMP ENS GMX DYDX 1INCH ZIL ENJ BAT KSM QTUM ONT WAVES ICX ZRX SUSHI YFI "
    "CELO ANKR HOT RVN IOST SC DGB OMG LRC SKL STORJ BAND OCEAN CTSI COTI CELR DENT WIN "
    "BTT JST SUN HIGH MASK AGIX WLD JUP PYTH BONK WIF FLOKI ORDI SATS BOME ENA ETHFI NOT "
    "PENDLE JTO MEME ACE NFP AI XAI MANTA ALT DYM PIXEL PORTAL STRK AEVO W TNSR SAGA REZ "
    "BB IO ZK LISTA ZRO BLAST BANANA RENDER TAO POL EIGEN SCR COW CETUS PNUT ACT MOVE ME"
)
_BASES = tuple(_BASE_TEXT.split())
QUOTES = ("USDT", "FDUSD", "USDC", "BTC", "ETH", "BNB", "TRY", "EUR", "BRL", "JPY")
_QUOTE_WEIGHTS = (60, 12, 10, 8, 3, 3, 2, 1, 0.6, 0.4)
_SYLLABLE_TEXT = "ka ri zo mu te na lo vi xe qu bo da fi ge hu jo ly pe sa wu"
_SYLLABLES = tuple(_SYLLABLE_TEXT.split())


def synthetic_symbols(n: int, seed: int, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``n`` distinct symbol names, most active first, none of them in ``exclude``."""
    rnd = random.Random(f"universe-{seed}")
    taken = set(exclude)
    out: list[str] = []
    i = 0
    while len(out) < n:
        if i < len(_BASES):  # a real base asset: its USDT pair exists and leads
            base = _BASES[i]
            quotes = ["USDT"]
        else:  # a made-up ticker: two or three syllables
            base = "".join(rnd.choice(_SYLLABLES) for _ in range(rnd.randint(2, 3))).upper()
            quotes = []
        # the majors trade against several quotes (BTCFDUSD, ETHBTC, SOLTRY...)
        extra = (3 if i < 10 else 1 if i < 60 else 0) + (rnd.random() < 0.3) + (not quotes)
        quotes += rnd.choices(QUOTES, _QUOTE_WEIGHTS, k=extra)
        for quote in quotes:
            name = base + quote
            if base != quote and name not in taken and len(name) <= 20:
                taken.add(name)
                out.append(name)
        i += 1
    return tuple(out[:n])


def weight(symbol: str, rank: int, seed: int) -> float:
    """The symbol's unnormalised share of the market's trades; rank 1 is the busiest."""
    noise = random.Random(f"share-{seed}-{symbol}").gauss(0.0, SPREAD)
    return float(rank**-ZIPF_S * math.exp(noise))
