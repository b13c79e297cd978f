"""Every Redis key, channel and TTL of livecandle, in one place.

Default names are the seed's (``klines_z:BTCUSDT:1m``). With ``cluster=True`` the series
part is wrapped in a hash tag (``klines_z:{BTCUSDT:1m}``) so that the keys one atomic
operation touches (zset, meta, gaps, live candle) share a Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from livecandle.domain.intervals import DAY_MS, Interval
from livecandle.domain.model import SeriesKey

LIVE_CANDLE_MIN_TTL_MS: Final = DAY_MS
LIVE_PRICE_TTL_MS: Final = DAY_MS
HEALTH_TTL_MS: Final = 30_000
LIVE_CLOSED_MAX: Final = 1000  # closed live candles kept per series while unconfirmed


def live_candle_ttl_ms(interval: Interval) -> int:
    """max(24 h, 2 x interval), as DESIGN.md section 2 says (a month: 2 x 31 days)."""
    return max(LIVE_CANDLE_MIN_TTL_MS, 2 * (interval.length_ms or 31 * DAY_MS))


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = ""
    cluster: bool = False

    def _series(self, name: str, series: SeriesKey) -> str:
        tag = f"{series.symbol}:{series.interval.name}"
        if self.cluster:
            tag = "{" + tag + "}"
        return f"{self.prefix}{name}:{tag}"

    def klines(self, series: SeriesKey) -> str:
        """ZSET of official closed candles: score = open ms, member = kline JSON array."""
        return self._series("klines_z", series)

    def meta(self, series: SeriesKey) -> str:
        """HASH earliest, latest, count, updated_ms, last_error."""
        return self._series("klines_meta", series)

    def gaps(self, series: SeriesKey) -> str:
        """ZSET of known exchange gaps: score = first missing open, member ``start:end``."""
        return self._series("klines_gaps", series)

    def klines_scratch(self, series: SeriesKey) -> str:
        """ZSET that exists only inside the official write script (many rows are merged
        into a listpack-encoded ``klines_z`` through it); never left behind."""
        return self._series("klines_scratch", series)

    def live_candle(self, series: SeriesKey) -> str:
        """STRING JSON of the forming candle (plus the unconfirmed previous one)."""
        return self._series("live_candle", series)

    def live_closed(self, series: SeriesKey) -> str:
        """ZSET of closed live candles whose official candle is not stored yet (the
        sibling of ``live_candle``): score = open ms, member = the live JSON."""
        return self._series("live_closed", series)

    def live_price(self, symbol: str) -> str:
        return f"{self.prefix}live_price:{symbol}"

    @property
    def universe(self) -> str:
        """HASH symbol -> JSON ``SymbolEntry`` (status, since_ms, followed, base, quote,
        tick_size): every symbol the exchange listed while a process followed it, kept
        after a delisting (its data is kept too). One key: no cross-slot access."""
        return f"{self.prefix}universe"

    @property
    def _demand_tag(self) -> str:
        return ":{demand}" if self.cluster else ""  # the two demand keys share a slot

    @property
    def universe_wanted(self) -> str:
        """ZSET symbol -> when a client last asked the proxy for it (ms): the symbols
        wanted on demand (web -> universe followers); idle ones are removed by
        ``universe_demand``'s script."""
        return f"{self.prefix}universe_wanted{self._demand_tag}"

    @property
    def universe_demand(self) -> str:
        """HASH symbol -> ``"<since_ms> <warm_ms>"``: the wanted symbols admitted to be
        followed (at most the cap), since when, and when their history was stored (0:
        not yet). Changed only by the demand scripts (store/demand.py)."""
        return f"{self.prefix}universe_demand{self._demand_tag}"

    @property
    def exchange_info(self) -> str:
        """HASH ``body`` (the exchange's own ``/api/v3/exchangeInfo`` answer, as sent)
        and ``fetched_ms`` (when it was read): the proxy serves it (web/proxy_info)."""
        return f"{self.prefix}exchange_info"

    def _symbol(self, name: str, symbol: str) -> str:
        """A per-symbol key; hash-tagged by the symbol in a cluster, so one symbol's lease,
        epoch and resume point share a slot (one script touches them together)."""
        tag = "{" + symbol + "}" if self.cluster else symbol
        return f"{self.prefix}{name}:{tag}"

    def lease(self, symbol: str) -> str:
        """STRING the worker id owning ``symbol``, with the lease TTL (``store.leases``)."""
        return self._symbol("lease", symbol)

    def lease_epoch(self, symbol: str) -> str:
        """STRING counter, INCRed on every acquisition of the symbol's lease: the fence
        a write carries (a write of an older epoch is refused)."""
        return self._symbol("lease_epoch", symbol)

    def live_resume(self, symbol: str) -> str:
        """STRING JSON ``{agg_id, trade_id, epoch, worker}``: the last aggregate trade (and
        individual trade) the stored live candles of the symbol include, written with them."""
        return self._symbol("live_resume", symbol)

    def fence(self, key: str) -> str:
        """STRING on a cluster: the highest lease epoch that may write ``key``, in its slot
        (hash-tagged by the key's own tag, or by the whole key when it has none)."""
        open_, close = key.find("{"), key.find("}")
        tag = key[open_ + 1 : close] if 0 <= open_ < close else key
        return f"{self.prefix}lease_fence:{{{tag}}}"

    @property
    def workers(self) -> str:
        """ZSET worker id -> expiry ms (Redis time): the live stream/fetcher workers."""
        return f"{self.prefix}lease_workers"

    def worker(self, worker_id: str) -> str:
        """STRING JSON stats of one worker (owned symbols, refused writes), with a TTL."""
        return f"{self.prefix}lease_worker:{worker_id}"

    def budget_window(self, name: str, window: int) -> str:
        """STRING counter of one fixed window of an exchange IP's shared budget
        (``weight``: request weight, ``connect``: connection attempts)."""
        return f"{self.prefix}budget:{{{name}}}:{window}"

    def budget_takers(self, name: str, window: int) -> str:
        """SET of the processes that asked one window of an exchange IP's budget ``name``
        for weight (how many share the IP: each takes its part while the count is out of
        reach); one slot with the budget's windows."""
        return f"{self.prefix}budget:{{{name}}}:{window}:takers"

    def budget_pause(self, name: str) -> str:
        """STRING: when the pause of an exchange IP's budget ``name`` ends (a 429's or
        418's Retry-After, exchange ms), for every process of the IP; one slot with the
        budget's windows (a hash tag)."""
        return f"{self.prefix}budget:{{{name}}}:pause"

    def health(self, role: str) -> str:
        return f"{self.prefix}livecandle_health:{role}"

    @property
    def klines_updated_channel(self) -> str:
        """Fetcher -> web: ``{symbol, interval, latest, count, added, replaced}``."""
        return f"{self.prefix}klines_updated"

    @property
    def live_channel(self) -> str:
        """Stream -> web: batches of live prices and candles, one message per flush."""
        return f"{self.prefix}live_updates"

    @property
    def closed_channel(self) -> str:
        """Stream -> fetcher: one message per live-writer flush naming every candle that
        closed in it, grouped by interval and open time (``store.closings``):
        ``{"closed": [{"interval": "1m", "open_ms": ..., "symbols": ["BTCUSDT", ...]}]}``."""
        return f"{self.prefix}candle_closed"
