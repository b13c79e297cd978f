"""The Redis client's limits (issue 14) come from the environment, bounded."""

from __future__ import annotations

import pytest

from livecandle.config import ConfigError, Settings


def test_the_redis_limits_have_bounded_defaults_and_their_variables() -> None:
    defaults = Settings.from_env({})
    assert (defaults.redis_max_connections, defaults.redis_timeout_s) == (64, 3.0)
    env = {"LIVECANDLE_REDIS_MAX_CONNECTIONS": "8", "LIVECANDLE_REDIS_TIMEOUT_S": "5"}
    settings = Settings.from_env(env)
    assert (settings.redis_max_connections, settings.redis_timeout_s) == (8, 5.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIVECANDLE_REDIS_MAX_CONNECTIONS", "1"),
        ("LIVECANDLE_REDIS_MAX_CONNECTIONS", "many"),
        ("LIVECANDLE_REDIS_TIMEOUT_S", "0"),
        ("LIVECANDLE_REDIS_TIMEOUT_S", "601"),
    ],
)
def test_a_bad_redis_limit_is_a_config_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
