"""The drop-in Binance market-data proxy (DESIGN.md section 8): ``proxy`` (the
endpoints), ``info`` (exchangeInfo), ``tickers`` (from livecandle's data), ``upstream``
(forwarding through the one weight plan), ``routes`` (where they are mounted)."""

from __future__ import annotations

from livecandle.config import Settings
from livecandle.exchange.binance.rest import BinanceRest
from livecandle.store import Store
from livecandle.web.api import Api
from livecandle.web.books import Books
from livecandle.web.mirror import Mirror
from livecandle.web.proxy.demand import Wishes
from livecandle.web.proxy.info import ExchangeInfoKeeper
from livecandle.web.proxy.proxy import Proxy
from livecandle.web.proxy.upstream import Upstream
from livecandle.web.status import Status


def build_proxy(
    api: Api,
    mirror: Mirror,
    status: Status,
    store: Store,
    settings: Settings,
    rest: BinanceRest | None,
    books: Books | None = None,
) -> Proxy:
    """The proxy of a web app; ``rest`` the process's exchange client (its budget);
    ``books`` the local order books (a FULL ticker's best bid/ask when warm)."""
    if rest is None:
        rest = BinanceRest(settings.binance_rest_url)
    info = ExchangeInfoKeeper(
        store, rest, status.now_ms, settings.proxy_info_period_s, lambda: api.served.entries
    )
    upstream = Upstream(
        rest,
        settings.binance_fapi_url,
        settings.binance_dapi_url,
        forward_signed=settings.proxy_forward_signed,
    )
    wishes = Wishes(
        store,
        api.served,
        info.held_statuses,
        info.statuses,
        status.now_ms,
        settings.proxy_follow_cap,
        # several wishes within the idle time, whatever it is set to
        every_s=min(10.0, settings.proxy_follow_idle_s / 4),
    )
    return Proxy(api, mirror, info, upstream, wishes=wishes, books=books)
