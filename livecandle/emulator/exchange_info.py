"""``GET /api/v3/exchangeInfo`` as Binance answers it, for every listed symbol.

Each symbol's object is encoded once and kept until its status changes, so the answer
for the whole market (about 1,600 symbols) is a join of cached bytes. Parameters
and errors are Binance's, read by ``exchange.binance.exchange_info`` (shared with the
proxy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from livecandle.exchange.binance import exchange_info as shared
from livecandle.exchange.binance.exchange_info import EXCHANGE_STATUSES

_json = msgspec.json.Encoder()

__all__ = ["EXCHANGE_STATUSES", "ExchangeInfo", "split_symbol", "symbol_info"]
_ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
_STP = ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]


def split_symbol(symbol: str, quotes: tuple[str, ...]) -> tuple[str, str]:
    """(base, quote): the longest known quote asset the name ends with."""
    for quote in sorted(quotes, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4] or symbol, symbol[-4:]


def symbol_info(symbol: str, status: str, base: str, quote: str) -> dict[str, Any]:
    """One symbol in Binance's current shape; tick 0.01 and step 0.00001, as the
    emulator's market trades."""
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": _ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00001000",
            },
            {"filterType": "ICEBERG_PARTS", "limit": 100},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": _STP,
    }


class ExchangeInfo:
    """The ``symbols`` part of exchangeInfo, each symbol's bytes encoded once."""

    def __init__(self, quotes: tuple[str, ...]) -> None:
        self.quotes = quotes
        self._encoded: dict[tuple[str, str, bool], bytes] = {}

    def _symbol_bytes(self, symbol: str, status: str, permission_sets: bool) -> bytes:
        key = (symbol, status, permission_sets)
        cached = self._encoded.get(key)
        if cached is None:
            info = symbol_info(symbol, status, *split_symbol(symbol, self.quotes))
            if not permission_sets:
                info["permissionSets"] = []
            cached = self._encoded[key] = _json.encode(info)
            if len(self._encoded) > 50_000:  # statuses flip: keep the cache bounded
                self._encoded.clear()
        return cached

    def select(self, q: Mapping[str, str], statuses: Mapping[str, str]) -> list[str]:
        """The symbols a query asks for (``exchange.binance.exchange_info.select``)."""
        return shared.select(q, statuses)

    def body(
        self,
        q: Mapping[str, str],
        statuses: Mapping[str, str],
        head: dict[str, Any],
    ) -> bytes:
        """The whole answer: ``head`` (timezone, serverTime, rateLimits...) and symbols."""
        names = self.select(q, statuses)
        perms = shared.show_permission_sets(q)
        return shared.join(head, (self._symbol_bytes(n, statuses[n], perms) for n in names))
