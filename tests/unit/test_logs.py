"""The log flood filter: first whole, then a few short lines, then a count."""

from __future__ import annotations

import logging

from livecandle.runtime.logs import Repeats


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def records(
    n: int, msg: str = "handler error %s", error: Exception | None = None
) -> list[logging.LogRecord]:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    return [
        logging.LogRecord("engineio.server", logging.ERROR, __file__, 1, msg, ("x",), exc_info)
        for _ in range(n)
    ]


def error() -> Exception:
    try:
        raise ValueError("bad packet")
    except ValueError as e:
        return e


def test_the_first_keeps_its_traceback_then_a_burst_of_one_liners_then_silence() -> None:
    clock = Clock()
    f = Repeats(burst=3, period_s=60, clock_s=clock)
    rs = records(1000, error=error())
    passed = [r for r in rs if f.filter(r)]
    assert len(passed) == 3
    assert passed[0].exc_info is not None  # the traceback, once
    assert all(r.exc_info is None and r.exc_text is None for r in passed[1:])
    assert "ValueError: bad packet" in passed[1].getMessage()
    assert "counted, not logged" in passed[2].getMessage()
    assert f.left_out == 997


def test_the_next_window_says_how_many_were_left_out() -> None:
    clock = Clock()
    f = Repeats(burst=2, period_s=60, clock_s=clock)
    assert sum(f.filter(r) for r in records(50)) == 2
    clock.now_s = 61
    first, second = records(2)
    assert f.filter(first) and "(repeated 48 times, not logged)" in first.getMessage()
    assert f.filter(second) and "repeated" not in second.getMessage()


def test_different_messages_and_exception_types_are_counted_apart() -> None:
    f = Repeats(burst=1, period_s=60, clock_s=Clock())
    assert f.filter(records(1, "a %s")[0]) and f.filter(records(1, "b %s")[0])
    assert f.filter(records(1, "a %s", error())[0])
    assert not f.filter(records(1, "a %s")[0])


def test_the_keys_kept_are_bounded() -> None:
    f = Repeats(burst=1, period_s=60, max_keys=10, clock_s=Clock())
    for i in range(100):
        assert f.filter(records(1, f"session {i} %s")[0])
    assert len(f._seen) == 10
