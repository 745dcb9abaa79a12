"""The realtime settings are validated at start-up, naming the variable."""

from __future__ import annotations

import pytest

from tests.live import python_with_env


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CHAT_SOCKET_BUFFER_BYTES", "100", "below the minimum of 4096"),
        ("CHAT_SOCKET_BUFFER_BYTES", "lots", "is not a whole number"),
        ("CHAT_SOCKET_BUFFER_BYTES", str(1 << 30), "above the maximum"),
        ("CHAT_RECONCILE_SECONDS", "0", "below the minimum"),
        ("CHAT_RECONCILE_SECONDS", "1000", "above the maximum"),
        ("CHAT_REDIS_HEALTH_CHECK_SECONDS", "nan", "not a finite number"),
        ("CHAT_EVENTS_REDIS_URL", "http://127.0.0.1:6379/0", "must be a redis:// URL"),
        ("CHAT_EVENTS_REDIS_CLUSTER", "maybe", "is not a boolean"),
        ("CHAT_DAPHNE_FAST_PATH", "sometimes", "is not a boolean"),
    ],
)
def test_realtime_setting_with_a_bad_value_stops_start_up_naming_it(
    name: str, value: str, says: str
) -> None:
    result = python_with_env("import chatsite.settings", **{name: value})
    assert result.returncode != 0
    assert name in result.stderr and says in result.stderr, result.stderr[-500:]


def test_realtime_settings_defaults() -> None:
    result = python_with_env(
        "from chatsite import settings as s; print(s.CHAT_SOCKET_BUFFER_BYTES, "
        "s.CHAT_RECONCILE_SECONDS, s.CHAT_REDIS_HEALTH_CHECK_SECONDS, "
        "s.CHAT_EVENTS_REDIS_URL == s.REDIS_URL, s.CHAT_EVENTS_REDIS_CLUSTER, "
        "s.CHAT_DAPHNE_FAST_PATH)"
    )
    assert result.stdout.split() == ["1048576", "2.0", "2.0", "True", "False", "True"]
