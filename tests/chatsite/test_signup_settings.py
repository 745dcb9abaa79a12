"""CHAT_SIGNUP and CHAT_INVITE_HOURS: defaults per environment, refusals at start."""

from __future__ import annotations

import pytest

from tests.live import python_with_env

PRINT = "from django.conf import settings as s; print(s.CHAT_SIGNUP, s.CHAT_INVITE_HOURS)"
PROD_KEY = "k" * 30 + "-Vq3x9Zr7Lm2Tb8Np4Wd6Yh1Jc5Gf0Sa"


def settings_with(**env: str) -> tuple[int, str, str]:
    code = f"import os; os.environ['DJANGO_SETTINGS_MODULE']='chatsite.settings'; {PRINT}"
    result = python_with_env(code, **env)
    return result.returncode, result.stdout.strip(), result.stderr


def test_settings_chat_signup_is_open_by_default_for_development() -> None:
    assert settings_with(CHAT_SIGNUP="", CHAT_INVITE_HOURS="")[:2] == (0, "open 168")


def test_settings_chat_signup_is_invite_by_default_in_production() -> None:
    code, out, err = settings_with(
        DJANGO_ENV="production", DJANGO_SECRET_KEY=PROD_KEY, CHAT_SIGNUP="", CHAT_INVITE_HOURS=""
    )
    assert (code, out) == (0, "invite 168"), err


@pytest.mark.parametrize("mode", ["open", "invite", "closed", "CLOSED"])
def test_settings_chat_signup_accepts_each_mode(mode: str) -> None:
    assert settings_with(CHAT_SIGNUP=mode)[:2] == (0, f"{mode.lower()} 168")


def test_settings_refuse_an_unknown_chat_signup_naming_the_variable() -> None:
    code, _out, err = settings_with(CHAT_SIGNUP="maybe")
    assert code != 0
    assert "CHAT_SIGNUP='maybe' is not one of: open, invite, closed" in err


@pytest.mark.parametrize(
    ("value", "message"),
    [("-1", "below the minimum of 0"), ("9000", "above the maximum of 8760"), ("x", "not a whole")],
)
def test_settings_refuse_a_bad_chat_invite_hours(value: str, message: str) -> None:
    code, _out, err = settings_with(CHAT_SIGNUP="", CHAT_INVITE_HOURS=value)
    assert code != 0
    assert "CHAT_INVITE_HOURS" in err and message in err
