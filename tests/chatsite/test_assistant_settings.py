"""The settings of issue 13 (assistants, a room's settings): read and validated at start."""

from __future__ import annotations

import pytest

from tests.live import python_with_env

SHOW = (
    "from chatsite import settings as s; "
    "print(s.GPT_MAX_ASSISTANTS_PER_MESSAGE, s.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS, "
    "s.CHAT_ROOM_CONTEXT_MESSAGES_MAX)"
)
NAMES = (
    "GPT_MAX_ASSISTANTS_PER_MESSAGE",
    "CHAT_ROOM_INSTRUCTIONS_MAX_CHARS",
    "CHAT_ROOM_CONTEXT_MESSAGES_MAX",
)


def test_assistant_settings_defaults_and_values() -> None:
    defaults = python_with_env(SHOW, **dict.fromkeys(NAMES, ""))
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.split() == ["3", "2000", "100"]
    chosen = python_with_env(
        SHOW,
        GPT_MAX_ASSISTANTS_PER_MESSAGE="5",
        CHAT_ROOM_INSTRUCTIONS_MAX_CHARS="0",
        CHAT_ROOM_CONTEXT_MESSAGES_MAX="500",
    )
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == ["5", "0", "500"]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("GPT_MAX_ASSISTANTS_PER_MESSAGE", "0", "below the minimum of 1"),
        ("GPT_MAX_ASSISTANTS_PER_MESSAGE", "11", "above the maximum of 10"),
        ("GPT_MAX_ASSISTANTS_PER_MESSAGE", "three", "is not a whole number"),
        ("CHAT_ROOM_INSTRUCTIONS_MAX_CHARS", "20001", "above the maximum of 20000"),
        ("CHAT_ROOM_CONTEXT_MESSAGES_MAX", "0", "below the minimum of 1"),
        ("CHAT_ROOM_CONTEXT_MESSAGES_MAX", "501", "above the maximum of 500"),
    ],
)
def test_assistant_settings_refuse_bad_values_naming_the_variable(
    name: str, value: str, says: str
) -> None:
    result = python_with_env(SHOW, **{name: value})
    assert result.returncode != 0
    assert name in result.stderr and says in result.stderr
