"""The presence and typing settings (issue 14) are validated at start-up, naming the
variable; the TTL must outlast two reconcile ticks, which renew the entries."""

from __future__ import annotations

import pytest

from tests.live import python_with_env


@pytest.mark.parametrize(
    ("env", "name", "says"),
    [
        ({"CHAT_PRESENCE_TTL_SECONDS": "0.5"}, "CHAT_PRESENCE_TTL_SECONDS", "below the minimum"),
        ({"CHAT_PRESENCE_TTL_SECONDS": "soon"}, "CHAT_PRESENCE_TTL_SECONDS", "not a"),
        ({"CHAT_PRESENCE_TTL_SECONDS": "9000"}, "CHAT_PRESENCE_TTL_SECONDS", "above the maximum"),
        (
            {"CHAT_PRESENCE_TTL_SECONDS": "10", "CHAT_RECONCILE_SECONDS": "6"},
            "CHAT_RECONCILE_SECONDS",
            "must be at most CHAT_PRESENCE_TTL_SECONDS / 2",
        ),
        ({"CHAT_PRESENCE_MAX_USERS": "0"}, "CHAT_PRESENCE_MAX_USERS", "below the minimum"),
        ({"CHAT_PRESENCE_MAX_USERS": "many"}, "CHAT_PRESENCE_MAX_USERS", "not a whole number"),
        (
            {"CHAT_TYPING_INTERVAL_SECONDS": "0"},
            "CHAT_TYPING_INTERVAL_SECONDS",
            "below the minimum",
        ),
        (
            {"CHAT_TYPING_INTERVAL_SECONDS": "inf"},
            "CHAT_TYPING_INTERVAL_SECONDS",
            "not a finite number",
        ),
        (
            {"CHAT_PRESENCE_COALESCE_SECONDS": "-1"},
            "CHAT_PRESENCE_COALESCE_SECONDS",
            "below the minimum",
        ),
        (
            {"CHAT_PRESENCE_COALESCE_SECONDS": "61"},
            "CHAT_PRESENCE_COALESCE_SECONDS",
            "above the maximum",
        ),
    ],
)
def test_presence_setting_with_a_bad_value_stops_start_up_naming_it(
    env: dict[str, str], name: str, says: str
) -> None:
    result = python_with_env("import chatsite.settings", **env)
    assert result.returncode != 0
    assert name in result.stderr and says in result.stderr, result.stderr[-500:]


def test_presence_settings_defaults() -> None:
    result = python_with_env(
        "from chatsite import settings as s; print(s.CHAT_PRESENCE_TTL_SECONDS, "
        "s.CHAT_PRESENCE_MAX_USERS, s.CHAT_TYPING_INTERVAL_SECONDS, "
        "s.CHAT_PRESENCE_COALESCE_SECONDS)"
    )
    assert result.stdout.split() == ["30.0", "50", "3.0", "1.0"]
