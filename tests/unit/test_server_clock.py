"""The exchange's clock estimated from round trips."""

from __future__ import annotations

from livecandle.domain.clock import ServerClock


def test_the_offset_is_taken_from_a_short_round_trip_not_a_long_one() -> None:
    clock = ServerClock()
    clock.observe(1_000, 1_010, 6_005)  # 10 ms: server 5,000 ms ahead
    assert clock.offset_ms == 5_000
    clock.observe(2_000, 2_400, 9_000)  # 400 ms: too unsure to move the estimate
    assert clock.offset_ms == 5_000


def test_a_host_clock_that_steps_is_followed_at_the_next_usual_round_trip() -> None:
    """The shortest round trip ever seen (10 ms) is seldom beaten; the host's clock then
    steps back 3 s (NTP, a resumed VM): the next round trip of the usual length (14 ms)
    is taken, or every time would be 3 s off for the rest of the run."""
    clock = ServerClock()
    clock.observe(1_000, 1_010, 6_005)
    clock.observe(601_000, 601_014, 609_007)  # the server is now 8,000 ms ahead
    assert clock.offset_ms == 8_000
