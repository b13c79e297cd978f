"""Symbols followed on demand in the universe's resolution (pure)."""

from __future__ import annotations

from livecandle.domain.universe import (
    IDLE,
    ON_DEMAND,
    Demand,
    Listing,
    Selection,
    SymbolEntry,
    resolve,
)

T0 = 1_700_000_000_000
SEL = Selection(("BTCUSDT",))


def listings(**status: str) -> list[Listing]:
    return [Listing(s, st, s[:-4], "USDT", "0.01") for s, st in status.items()]


def test_an_admitted_trading_symbol_is_followed_on_demand_with_since_asked_and_warm() -> None:
    demand = {"ETHUSDT": Demand(T0, T0 + 5, 0)}
    entries, change = resolve(
        SEL, {}, listings(BTCUSDT="TRADING", ETHUSDT="TRADING"), T0, ["BTCUSDT"], demand
    )
    eth = entries["ETHUSDT"]
    assert eth.followed and not eth.selected and eth.demand == ON_DEMAND
    assert (eth.demand_since_ms, eth.asked_ms, eth.warm_ms) == (T0, T0 + 5, 0)
    assert not eth.served_on_demand  # not warm: the proxy still forwards it
    assert change.follow == ("ETHUSDT",) and change.stop == ()
    warm = resolve(
        SEL, entries, listings(ETHUSDT="TRADING"), T0, [], {"ETHUSDT": Demand(T0, T0, 9)}
    )
    assert warm[0]["ETHUSDT"].served_on_demand


def test_an_admitted_symbol_not_trading_is_not_followed() -> None:
    entries, change = resolve(
        SEL, {}, listings(ETHUSDT="BREAK"), T0, [], {"ETHUSDT": Demand(T0, T0)}
    )
    assert not entries["ETHUSDT"].followed and change.follow == ()


def test_a_selected_symbol_needs_no_demand() -> None:
    entries, _ = resolve(SEL, {}, listings(BTCUSDT="TRADING"), T0, [], {"BTCUSDT": Demand(T0, T0)})
    assert entries["BTCUSDT"].followed and entries["BTCUSDT"].demand == ""


def test_a_symbol_no_longer_wanted_is_idle_since_then_and_stops() -> None:
    was, _ = resolve(SEL, {}, listings(ETHUSDT="TRADING"), T0, [], {"ETHUSDT": Demand(T0, T0, 1)})
    later = T0 + 60_000
    entries, change = resolve(SEL, was, listings(ETHUSDT="TRADING"), later, ["ETHUSDT"], {})
    eth = entries["ETHUSDT"]
    assert not eth.followed and eth.demand == IDLE and eth.demand_since_ms == later
    assert eth.asked_ms == T0 and not eth.served_on_demand
    assert change.stop == ("ETHUSDT",)
    again, _ = resolve(SEL, entries, listings(ETHUSDT="TRADING"), later + 1, [], {})
    assert again["ETHUSDT"].demand_since_ms == later  # idle since then, still


def test_demand_round_trips_through_the_stored_form_and_is_absent_when_none() -> None:
    entry = SymbolEntry("ETHUSDT", "TRADING", T0, True, False, "ETH", "USDT", "0.01")
    assert "demand" not in entry.as_dict()
    wanted = SymbolEntry(
        "ETHUSDT", "TRADING", T0, True, False, "ETH", "USDT", "0.01", ON_DEMAND, T0, T0 + 1, T0 + 2
    )
    assert SymbolEntry.from_dict(wanted.as_dict()) == wanted
    assert SymbolEntry.from_dict(entry.as_dict()) == entry
