"""The emulator's synthetic order book: consistent with its trades, its diffs and its past."""

from __future__ import annotations

import random

from livecandle.emulator.book import SyntheticBook, grid_step
from livecandle.emulator.market import TICK

PRICE = 6_000_000_000_000  # 60,000.00000000


def _book(levels: int = 50) -> SyntheticBook:
    return SyntheticBook(key=12345, step=grid_step(60_000.0), levels=levels, first_update_id=1000)


def test_a_grid_step_is_a_whole_number_of_ticks_near_a_basis_point() -> None:
    assert grid_step(60_000.0) == 600 * TICK
    assert grid_step(0.5) == TICK


def test_the_spread_straddles_every_trade_and_each_side_keeps_its_levels() -> None:
    book = _book()
    rng = random.Random(3)
    price = PRICE
    for _ in range(500):
        price += rng.randrange(-20, 21) * book.step // 3 + rng.randrange(0, 100) * TICK
        book.recentre(price)
        assert len(book.bids) == len(book.asks) == 50
        book.noise()  # may take a level out
        assert max(book.bids) < price < min(book.asks)
        assert max(book.bids) == book.best_bid and min(book.asks) == book.best_ask
        assert min(book.bids) == book.worst_bid and max(book.asks) == book.worst_ask
        assert abs(len(book.bids) + len(book.asks) - 100) <= 3  # noise: 2 set, 1 taken out


def test_a_jump_past_the_whole_book_rebuilds_it() -> None:
    book = _book(levels=10)
    book.recentre(PRICE)
    book.recentre(PRICE * 2)
    assert max(book.bids) < PRICE * 2 < min(book.asks)
    assert len(book.bids) == len(book.asks) == 10


def test_the_book_at_an_old_update_id_is_rebuilt_from_the_journal() -> None:
    book = _book()
    book.recentre(PRICE)
    then_id, then = book.update_id, (dict(book.bids), dict(book.asks))
    for k in range(20):
        book.recentre(PRICE + k * book.step // 2)
        book.noise()
    assert book.update_id > then_id
    assert book.at(then_id) == then
    assert book.at(book.update_id) == (book.bids, book.asks)


def test_changes_since_an_id_applied_to_the_book_then_give_the_book_now() -> None:
    book = _book()
    book.recentre(PRICE)
    after = book.update_id
    bids, asks = dict(book.bids), dict(book.asks)
    for k in range(30):
        book.recentre(PRICE - k * book.step // 4)
        book.noise()
    first, db, da = book.changes(after)
    assert first == after + 1
    for side, diff in ((bids, db), (asks, da)):
        for p, q in diff.items():
            if q:
                side[p] = q
            else:
                side.pop(p, None)
    assert (bids, asks) == (book.bids, book.asks)
