"""LIVECANDLE_LEASES and LIVECANDLE_LEASE_TTL_MS (issue 10): off by default, so one
process behaves as before."""

from __future__ import annotations

import pytest

from livecandle.config import ConfigError, Settings


def test_leases_are_off_unless_asked_for_and_their_ttl_is_read() -> None:
    assert Settings.from_env({}).leases is False
    s = Settings.from_env({"LIVECANDLE_LEASES": "1", "LIVECANDLE_LEASE_TTL_MS": "4000"})
    assert (s.leases, s.lease_ttl_ms) == (True, 4000)
    assert Settings.from_env({}).lease_ttl_ms == 10_000


def test_a_lease_ttl_under_a_second_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match="LIVECANDLE_LEASE_TTL_MS"):
        Settings.from_env({"LIVECANDLE_LEASE_TTL_MS": "50"})
