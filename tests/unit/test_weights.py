"""WeightBudget on an injected clock whose injected sleep moves that clock: no real waiting."""

from __future__ import annotations

import pytest

from livecandle.domain.clock import ManualClock
from livecandle.exchange.binance.weights import LEARNED_LIMIT_TTL_MS, Priority, WeightBudget

MIN = 60_000
T0 = 28_333_334 * MIN  # a window start (1_700_000_040_000)


class SleepingClock(ManualClock):
    """``sleep(s)`` records ``s`` and moves the clock on by it."""

    def __init__(self, now_ms: int) -> None:
        super().__init__(now_ms)
        self.slept_s: list[float] = []

    async def sleep(self, s: float) -> None:
        self.slept_s.append(s)
        assert len(self.slept_s) < 10, "acquire keeps sleeping"
        self.advance(round(s * 1000))


def budget(clock: SleepingClock, limit: int = 100, window_ms: int = MIN) -> WeightBudget:
    """A budget whose every priority may fill the whole window (no urgent reserve)."""
    return WeightBudget(
        clock, limit=limit, window_ms=window_ms, safety=1.0, sleep=clock.sleep, urgent_share=0.0
    )


async def test_requests_within_the_budget_go_at_once() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(60)
    await b.acquire(40)
    assert clock.slept_s == []
    assert (b.used, b.requests, b.weight_sent, b.waits) == (100, 2, 100, 0)


async def test_the_budget_keeps_a_safety_margin_below_the_limit() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = WeightBudget(clock, limit=100, safety=0.97, sleep=clock.sleep)
    assert b.budget == 97
    await b.acquire(97)
    await b.acquire(1)
    assert b.waits == 1


async def test_a_full_window_waits_for_the_next_window() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(60)
    await b.acquire(60)
    # until the next window starts, plus a margin for the exchange's clock
    assert clock.slept_s == [50.05]
    assert clock.now_ms() == T0 + MIN + 50
    assert (b.used, b.requests, b.waits) == (60, 2, 1)


async def test_a_request_heavier_than_the_budget_goes_alone_in_a_fresh_window() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(500)
    assert clock.slept_s == [] and b.used == 500


async def test_observe_syncs_up_to_the_exchange_count_never_down() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(2)
    b.observe(90)  # other clients of this IP spent weight too
    assert b.used == 90
    b.observe(10)
    assert b.used == 90
    await b.acquire(20)  # 110 > 100: waits for the next window
    assert clock.slept_s == [50.05] and b.used == 20


async def test_observe_in_a_new_window_starts_from_the_exchange_count() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(90)
    clock.set(T0 + MIN + 1_000)
    b.observe(3)
    assert b.used == 3


async def test_block_pauses_every_request_until_it_ends() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    b.block(30, "HTTP 429 on klines")
    assert b.blocked_until_ms == T0 + 40_000 and b.block_reason == "HTTP 429 on klines"
    b.block(5, "a shorter pause")  # never shortens the pause already in force
    assert b.blocked_until_ms == T0 + 40_000 and b.block_reason == "HTTP 429 on klines"
    await b.acquire(1)
    assert clock.slept_s == [30.0] and clock.now_ms() == T0 + 40_000
    assert (b.used, b.waits) == (1, 1)


async def test_a_ban_longer_than_the_window_is_waited_out_whole() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    b.block(120, "HTTP 418 on klines: banned")
    await b.acquire(1)
    assert sum(clock.slept_s) == 120.0 and b.used == 1


@pytest.mark.parametrize(
    ("window_ms", "header"),
    [
        (MIN, "x-mbx-used-weight-1m"),
        (2 * MIN, "x-mbx-used-weight-2m"),
        (3_600_000, "x-mbx-used-weight-1h"),
        (86_400_000, "x-mbx-used-weight-1d"),
        (2_000, "x-mbx-used-weight-2s"),
    ],
)
def test_the_header_names_the_window(window_ms: int, header: str) -> None:
    assert budget(SleepingClock(T0), window_ms=window_ms).header == header


async def test_set_limit_changes_budget_and_window_and_keeps_what_was_used() -> None:
    clock = SleepingClock(T0 + 11_000)  # inside a 2-second window
    b = WeightBudget(clock, sleep=clock.sleep)  # Binance's default: 6000 per minute
    await b.acquire(50)
    b.set_limit(100, 2_000)  # learned from exchangeInfo
    assert (b.limit, b.window_ms, b.budget, b.used) == (100, 2_000, 97, 50)
    assert b.header == "x-mbx-used-weight-2s"
    await b.acquire(50)  # 100 > 97: waits for the next 2-second window
    assert clock.slept_s == [1.05] and clock.now_ms() == T0 + 12_050
    assert b.used == 50


async def test_weight_answered_just_after_a_turn_of_the_learned_window_counts_in_both() -> None:
    # exchangeInfo (20, taken under the default minute) answered 10 ms after a turn of the
    # exchange's 2-second window, within the plan's skew margin: the exchange may have
    # counted it in its new window, which the renumbered plan only starts 50 ms later
    clock = SleepingClock(T0 + 10_000 - 5)
    b = WeightBudget(clock, sleep=clock.sleep)
    async with b.sending(20):
        clock.advance(15)
    b.set_limit(20, 2_000)
    await b.acquire(2)  # not in the window of the 20: in the one after
    assert clock.now_ms() == T0 + 12_050 and b.used == 2
    # changed well inside a window, the weight counts in that window only
    clock = SleepingClock(T0 + 10_500)
    b = WeightBudget(clock, sleep=clock.sleep)
    async with b.sending(20):
        clock.advance(15)
    b.set_limit(20, 2_000)
    await b.acquire(2)
    assert clock.now_ms() == T0 + 12_050 and b.used == 2
    await b.acquire(2)
    assert clock.now_ms() == T0 + 12_050 and b.used == 4


async def test_a_request_still_on_its_way_when_the_window_turns_counts_in_the_new_one() -> None:
    # sent well before the window's last 500 ms, answered only after the turn (a loaded
    # host): the exchange may count it in either window
    clock = SleepingClock(T0 + MIN - 2_000)
    b = budget(clock)
    async with b.sending(30):
        clock.advance(2_500)
        assert b.room(Priority.HISTORY) == 70
        clock.advance(MIN)  # and in every window that begins before its answer
        assert b.room(Priority.HISTORY) == 70
    assert b.room(Priority.HISTORY) == 70
    clock.advance(MIN)  # answered: the window after holds nothing of it
    assert b.room(Priority.HISTORY) == 100


async def test_a_request_answered_within_the_skew_margin_counts_in_the_next_window() -> None:
    # answered 20 ms after the exchange's turn (before the plan's, 50 ms after it): it
    # may have reached the exchange after the turn
    clock = SleepingClock(T0 + MIN - 2_000)
    b = budget(clock)
    async with b.sending(30):
        clock.advance(2_020)
    clock.advance(100)  # the plan's next window
    assert b.room(Priority.HISTORY) == 70
    # answered before the last 100 ms of its window: nothing carries over (no weight of
    # the whole market's history lost to requests that had landed well before the turn)
    clock.set(T0 + 3 * MIN - 2_000)
    async with b.sending(30):
        clock.advance(1_900)  # 150 ms before the plan's turn
    clock.advance(200)
    assert b.room(Priority.HISTORY) == 100


async def test_a_429_pauses_everyone_and_shrinks_the_limit_to_what_was_accepted() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    await b.acquire(30)
    b.observe(40)  # the exchange accepted 40 in this window (others of the IP spent too)
    b.limit_reached(50, "HTTP 429 on klines")
    assert b.limit == 40 and b.limited == 1
    assert b.blocked_until_ms == T0 + 60_000 and b.block_reason == "HTTP 429 on klines"
    b.limit_reached(50, "HTTP 429 on klines")  # one of the same volley: no further change
    assert b.limit == 40
    await b.acquire(1)  # after the pause, in the next window (plus the skew margin)
    assert clock.slept_s == [50.0, 0.05] and b.used == 1


async def test_after_a_short_429_pause_the_rest_of_a_full_window_is_waited_out() -> None:
    """Other clients of the IP filled the window (our own count is 10): a 429 with a
    Retry-After of 2 s. After it, the window is still full at the exchange: the next
    request waits for the next window, not 2 s."""
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock, limit=6000)
    await b.acquire(10)
    b.limit_reached(2, "HTTP 429 on klines", used=6005)
    await b.acquire(1)
    assert clock.slept_s[0] == 2.0 and sum(clock.slept_s) >= 50  # to T0 + 60 s
    assert b.used == 1


async def test_a_429_stating_a_shorter_window_takes_that_window_with_its_limit() -> None:
    # "current limit is 6 request weight per 2 SECOND": 6 read against a minute would
    # let the plan send 6 weight a minute, 20 times less than the exchange allows
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock, limit=6000)
    b.limit_reached(2, "HTTP 429 on klines", stated_limit=6, used=8, stated_window_ms=2_000)
    assert (b.window_ms, b.header) == (2_000, "x-mbx-used-weight-2s")
    assert 0 < b.limit <= 6  # (and as any 429: what was accepted, or half, to regrow)
    await b.acquire(2)  # after the pause, in the next 2 s window: not a minute later
    assert sum(clock.slept_s) < 3


async def test_a_429_stating_a_window_that_allows_more_keeps_the_plan() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock, limit=600)
    b.limit_reached(2, "HTTP 429", stated_limit=6000, used=6001, stated_window_ms=1_000)
    assert b.window_ms == MIN


async def test_a_429_with_nothing_accepted_in_the_window_halves_the_limit_once() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    b.limit_reached(50, "HTTP 429")
    b.limit_reached(50, "HTTP 429")  # answered to a request already in flight
    assert b.limit == 50


async def test_after_a_429_the_budget_resumes_at_half_and_grows_back_window_by_window() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = WeightBudget(
        clock, limit=100, safety=1.0, sleep=clock.sleep, latency_s=10.0, max_in_flight=2
    )
    assert b.in_flight_cap == 2 and not b.recovering
    b.observe(80)
    b.limit_reached(50, "HTTP 429")
    assert b.recovering and b.in_flight_cap == 1
    budgets = []
    for w in range(1, 7):
        clock.set(T0 + w * MIN + 1_000)
        b.observe(0)
        budgets.append(b.budget)
    assert budgets == [40, 50, 60, 70, 80, 80]
    assert not b.recovering and b.in_flight_cap == 2


async def test_a_sender_waits_while_the_requests_in_flight_are_at_the_cap() -> None:
    import asyncio

    clock = SleepingClock(T0 + 10_000)
    b = WeightBudget(clock, limit=6000, safety=1.0, sleep=clock.sleep, max_in_flight=2)
    answered = asyncio.Event()
    sent: list[int] = []

    async def send(n: int) -> None:
        async with b.sending(2):
            sent.append(n)
            await answered.wait()

    tasks = [asyncio.create_task(send(n)) for n in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent == [0, 1] and b.in_flight == 2
    answered.set()
    await asyncio.gather(*tasks)
    assert sent == [0, 1, 2] and b.in_flight == 0


async def test_after_a_ban_the_budget_resumes_gradually_one_request_at_a_time() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock)
    b.banned(120, "HTTP 418 on klines: banned")
    assert b.recovering and b.in_flight_cap == 1 and b.limit == 100
    await b.acquire(1)
    assert sum(clock.slept_s) == 120.0 and b.budget == 50


def test_rereading_an_unchanged_stated_limit_keeps_the_one_a_429_taught() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock, limit=6000)
    b.set_limit(6000, MIN)  # exchangeInfo
    b.observe(40)  # another client of the IP spends weight: the exchange accepted 40
    b.limit_reached(50, "HTTP 429 on klines")
    assert b.limit == 40
    clock.advance(10 * MIN)
    b.set_limit(6000, MIN)  # exchangeInfo again, 10 minutes later: still 6000 stated
    assert b.limit == 40 and b.recovering
    clock.advance(LEARNED_LIMIT_TTL_MS)  # an hour without a 429: the stated one again
    b.set_limit(6000, MIN)
    assert b.limit == 6000


def test_rereading_an_unchanged_stated_limit_keeps_the_window_a_429_taught() -> None:
    # "6 per 2 SECOND" from a 429; exchangeInfo, read again, still states 6000 a minute
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock, limit=6000)
    b.set_limit(6000, MIN)
    b.limit_reached(2, "HTTP 429 on klines", stated_limit=6, used=8, stated_window_ms=2_000)
    taught = (b.limit, b.window_ms)
    assert taught[1] == 2_000
    clock.advance(10 * MIN)
    b.set_limit(6000, MIN)
    assert (b.limit, b.window_ms) == taught and b.header == "x-mbx-used-weight-2s"
    clock.advance(LEARNED_LIMIT_TTL_MS)  # an hour without a 429: the stated one again
    b.set_limit(6000, MIN)
    assert (b.limit, b.window_ms) == (6000, MIN)


def test_a_changed_stated_limit_replaces_a_learned_one() -> None:
    clock = SleepingClock(T0 + 10_000)
    b = budget(clock, limit=6000)
    b.set_limit(6000, MIN)
    b.observe(40)
    b.limit_reached(50, "HTTP 429 on klines")
    b.set_limit(1200, MIN)  # the exchange now states another limit: it is the news
    assert b.limit == 1200


def test_two_requests_in_flight_by_default_so_a_429_is_followed_by_one_at_most() -> None:
    b = WeightBudget(SleepingClock(T0), latency_s=10.0)  # a slow link would want many
    assert b.max_in_flight == 2 and b.in_flight_cap == 2


def test_a_429_stating_a_lower_limit_sets_it() -> None:
    b = budget(SleepingClock(T0 + 10_000), limit=6000)
    b.limit_reached(50, "HTTP 429", stated_limit=1200, used=1250)
    assert b.limit == 1200


def test_a_429_under_a_stated_limit_the_ip_has_not_reached_keeps_the_limit() -> None:
    """An overloaded exchange answering 429 to everything (its body still states the
    usual limit, the IP's weight far below it) teaches no lower limit; it only pauses."""
    b = budget(SleepingClock(T0 + 10_000), limit=6000)
    b.observe(40)
    b.limit_reached(50, "HTTP 429", stated_limit=6000, used=40)
    assert b.limit == 6000
    assert b.blocked_until_ms > 0


def test_a_429_stating_the_limit_the_ip_reached_shrinks_to_what_was_accepted() -> None:
    """Another client of the IP spends weight: the IP reached the stated limit although
    this process sent less."""
    b = budget(SleepingClock(T0 + 10_000), limit=6000)
    b.observe(3000)
    b.limit_reached(50, "HTTP 429", stated_limit=6000, used=6001)
    assert b.limit == 3000


async def test_an_answer_to_a_request_sent_before_the_window_turned_does_not_fill_the_new_one() -> (
    None
):
    """With requests in flight across a window's turn, the exchange may count one in the
    old window and answer with the old window's total: taken as the new window's use, it
    idled history for the rest of that minute."""
    clock = SleepingClock(T0 + 59_000)
    b = budget(clock)
    await b.acquire(90)
    sent_ms = clock.now_ms()
    clock.set(T0 + MIN + 200)  # the answer comes after the turn
    b.observe(95, sent_ms=sent_ms)  # the old window's count
    assert b.used == 0
    await b.acquire(80)
    assert clock.slept_s == []
    b.observe(85, sent_ms=clock.now_ms())  # a request of this window: heeded
    assert b.used == 85


async def test_weight_sent_at_a_windows_end_counts_in_the_next_window_too() -> None:
    # sent 100 ms before the turn, a request may reach the exchange after it: the
    # exchange then counts it in the new window, where the budget must count it too
    clock = SleepingClock(T0 + MIN - 100)
    b = budget(clock)
    await b.acquire(30)
    clock.advance(200)  # the next window
    assert b.room(Priority.HISTORY) == 70
    await b.acquire(70)
    await b.acquire(1)  # full: waits for the window after
    assert b.waits == 1 and clock.now_ms() == T0 + 2 * MIN + 50
    # well inside a window, nothing carries over
    clock.advance(10_000)
    await b.acquire(50)
    clock.advance(MIN)
    assert b.room(Priority.HISTORY) == 100
