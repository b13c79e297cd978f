"""The universe's selection and its resolution against a listing (pure)."""

from __future__ import annotations

from livecandle.domain.universe import Listing, Selection, SymbolEntry, resolve

T0 = 1_700_000_000_000


def lst(symbol: str, status: str = "TRADING", quote: str = "USDT") -> Listing:
    return Listing(symbol, status, symbol[: -len(quote)], quote, "0.01")


def test_star_quote_selects_by_the_quote_asset_not_the_name() -> None:
    sel = Selection.parse(["*USDT"])
    assert sel.selects(lst("BTCUSDT"))
    # a name ending in USDT quoted in another asset, and the reverse
    assert not sel.selects(Listing("XUSDT", "TRADING", "XUSD", "T"))
    assert sel.selects(Listing("ODDNAME", "TRADING", "ODD", "USDT"))


def test_globs_stars_and_names_mix() -> None:
    sel = Selection.parse(["BTC*", "ETHBTC"])
    assert sel.selects(lst("BTCUSDT")) and sel.selects(lst("BTCEUR", quote="EUR"))
    assert sel.selects(lst("ETHBTC", quote="BTC"))
    assert not sel.selects(lst("ETHUSDT"))
    assert Selection.parse(["*"]).selects(lst("ANYTHING", quote="X"))


def test_only_trading_symbols_are_followed_and_changes_say_what_to_start_and_stop() -> None:
    sel = Selection.parse(["*USDT", "ETHBTC"])
    listing = [lst("BTCUSDT"), lst("ETHUSDT", "BREAK"), lst("ETHBTC", "HALT", "BTC")]
    entries, change = resolve(sel, {}, listing, T0)
    assert change.follow == ("BTCUSDT",) and change.stop == ()
    assert change.not_trading == ("ETHBTC",)  # named explicitly: reported
    assert entries["ETHUSDT"] == SymbolEntry(
        "ETHUSDT", "BREAK", T0, False, True, "ETH", "USDT", "0.01"
    )
    # ETHUSDT trades again, BTCUSDT is delisted
    entries2, change2 = resolve(
        sel, entries, [lst("ETHUSDT"), lst("ETHBTC", "HALT", "BTC")], T0 + 5, {"BTCUSDT"}
    )
    assert change2.follow == ("ETHUSDT",) and change2.stop == ("BTCUSDT",)
    assert entries2["BTCUSDT"].status == "DELISTED" and entries2["BTCUSDT"].since_ms == T0 + 5
    assert entries2["ETHBTC"].since_ms == T0  # unchanged status: since when it has it
    # read again, nothing changed
    entries3, change3 = resolve(sel, entries2, [lst("ETHUSDT")], T0 + 9, {"ETHUSDT"})
    assert not change3 and entries3["BTCUSDT"].since_ms == T0 + 5


def test_a_stored_entry_survives_its_round_trip() -> None:
    e = SymbolEntry("ETHUSDT", "END_OF_DAY", T0, False, True, "ETH", "USDT", "0.01")
    assert e.as_dict()["status"] == "end_of_day"
    assert SymbolEntry.from_dict(e.as_dict()) == e
