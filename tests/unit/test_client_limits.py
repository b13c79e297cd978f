"""The per-address and per-client limits without a server: their settings, the message
token bucket, the once-a-minute refusal log and the write endpoint's origin rule."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from livecandle.config import ConfigError, Settings
from livecandle.web.limits import Refusals, SocketLimits
from livecandle.web.security import Security, page_policy

NEW = {
    "LIVECANDLE_CONNECTIONS_PER_IP": ("connections_per_ip", 2000),
    "LIVECANDLE_REQUESTS_PER_IP": ("requests_per_ip", 32),
    "LIVECANDLE_QUEUED_REQUESTS_PER_IP": ("queued_requests_per_ip", 256),
    "LIVECANDLE_SOCKETIO_SESSIONS_PER_IP": ("socketio_sessions_per_ip", 2000),
    "LIVECANDLE_SOCKETIO_MESSAGES_PER_S": ("socketio_messages_per_s", 20),
    "LIVECANDLE_SOCKETIO_MAX_ROOMS": ("socketio_max_rooms", 4096),
}


@pytest.mark.parametrize("variable", sorted(NEW))
def test_each_limit_has_its_default_and_its_variable(variable: str) -> None:
    attr, default = NEW[variable]
    assert getattr(Settings.from_env({}), attr) == default
    assert getattr(Settings.from_env({variable: "7"}), attr) == 7
    assert getattr(Settings.from_env({variable: "0"}), attr) == 0  # no limit
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: "-1"})
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: "many"})


class Clock:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s


def limits(clock: Clock, per_s: float = 20) -> SocketLimits:
    return SocketLimits(object(), Refusals(clock_s=clock), messages_per_s=per_s, clock_s=clock)


def test_a_client_may_send_a_burst_of_twice_the_rate_then_the_rate() -> None:
    clock = Clock()
    lim = limits(clock)
    assert all(lim._over_rate("a") is None for _ in range(40))
    over = lim._over_rate("a")
    assert over is not None and over[0] == "messages_per_s"
    assert "more than 20 messages a second" in over[1]
    clock.s += 0.5  # ten more allowed, no more
    assert all(lim._over_rate("a") is None for _ in range(10))
    assert lim._over_rate("a") is not None
    assert lim._over_rate("b") is None  # per client


def test_a_rate_of_zero_is_no_limit() -> None:
    lim = limits(Clock(), per_s=0)
    assert all(lim._over_rate("a") is None for _ in range(10_000))


def test_refusals_are_counted_each_and_logged_once_a_minute_per_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = Refusals(clock_s=clock)
    with caplog.at_level(logging.WARNING, "livecandle.web.limits"):
        for _ in range(1000):
            refusals.refused("requests_per_ip", "10.0.0.1", "too many")
        refusals.refused("requests_per_ip", "10.0.0.2", "too many")
        clock.s += 60
        refusals.refused("requests_per_ip", "10.0.0.1", "too many")
    assert refusals.counts["requests_per_ip"] == 1002
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused 10.0.0.1: too many",
        "refused 10.0.0.2: too many",
        "refused 10.0.0.1: too many (999 more since the last line)",
    ]


def scope(origin: str | None, host: str = "chart.example:8000") -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "http", "headers": headers, "query_string": b""}


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # a program, not a page
        ("http://chart.example:8000", True),  # the page's own origin
        ("https://chart.example:8000", True),  # TLS ended before this server
        ("http://listed.example", True),
        ("http://evil.example", False),
        ("http://chart.example:8000.evil.example", False),
        ("null", False),  # a sandboxed frame or a file
    ],
)
def test_writes_are_allowed_from_this_origin_and_listed_ones_only(
    origin: str | None, allowed: bool
) -> None:
    # "*" lets any page open socket.io; writes still need a named origin
    security = Security(None, ["http://listed.example", "*"])
    assert (security._write_refusal(scope(origin), origin) is None) == allowed


def test_a_host_header_that_is_no_host_never_reaches_the_policy() -> None:
    assert b"ws://a.example:80 wss://a.example:80" in page_policy("a.example:80")
    for bad in ("a.example; script-src *", "a b", "x'", ""):
        policy = page_policy(bad).decode()
        assert "connect-src 'self';" in policy and "script-src 'self';" in policy
