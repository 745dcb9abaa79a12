"""``manage.py ensure_superuser``: the admin account from the environment, once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.hashers import check_password
from django.core.management import CommandError, call_command

from messages_app.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-admin-pass-42"


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "admin@example.com")
    return monkeypatch


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("USERNAME", "PASSWORD", "EMAIL"):
        monkeypatch.delenv(f"DJANGO_SUPERUSER_{name}", raising=False)


def ensure() -> str:
    out = StringIO()
    call_command("ensure_superuser", stdout=out)
    return out.getvalue()


def test_ensure_superuser_creates_the_admin_once(admin_env: pytest.MonkeyPatch) -> None:
    assert "created the admin account 'admin'" in ensure()
    user = User.objects.get(username="admin")
    assert (user.is_superuser, user.is_staff, user.is_active) == (True, True, True)
    assert user.email == "admin@example.com"
    assert check_password(PASSWORD, user.password)


def test_ensure_superuser_again_changes_nothing(admin_env: pytest.MonkeyPatch) -> None:
    ensure()
    before = User.objects.values().get(username="admin")
    # even with another password and email in the environment
    admin_env.setenv("DJANGO_SUPERUSER_PASSWORD", "another-Long-pass-77")
    admin_env.setenv("DJANGO_SUPERUSER_EMAIL", "other@example.com")
    assert "exists; nothing changed" in ensure()
    assert User.objects.count() == 1
    assert User.objects.values().get(username="admin") == before


def test_ensure_superuser_without_variables_does_nothing() -> None:
    assert "DJANGO_SUPERUSER_USERNAME is not set" in ensure()
    assert User.objects.count() == 0


def test_ensure_superuser_email_is_optional(admin_env: pytest.MonkeyPatch) -> None:
    admin_env.delenv("DJANGO_SUPERUSER_EMAIL")
    ensure()
    assert User.objects.get(username="admin").email == ""


@pytest.mark.parametrize(
    "env,message",
    [
        (
            {"DJANGO_SUPERUSER_PASSWORD": ""},
            "DJANGO_SUPERUSER_PASSWORD is empty or unset: it is needed to create the admin "
            "account 'admin'.",
        ),
        (
            {"DJANGO_SUPERUSER_USERNAME": "  "},
            "DJANGO_SUPERUSER_PASSWORD is set but DJANGO_SUPERUSER_USERNAME is empty or unset.",
        ),
        ({"DJANGO_SUPERUSER_USERNAME": "no spaces please"}, "DJANGO_SUPERUSER_USERNAME="),
        ({"DJANGO_SUPERUSER_USERNAME": "x" * 151}, "at most 150 characters"),
        ({"DJANGO_SUPERUSER_EMAIL": "not-an-address"}, "is not an email address"),
        ({"DJANGO_SUPERUSER_PASSWORD": "short"}, "DJANGO_SUPERUSER_PASSWORD is too weak"),
        ({"DJANGO_SUPERUSER_PASSWORD": "password123"}, "too common"),
    ],
)
def test_ensure_superuser_refuses_bad_values_clearly(
    admin_env: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        admin_env.setenv(name, value)
    with pytest.raises(CommandError) as error:
        ensure()
    assert message in str(error.value)
    assert User.objects.count() == 0


def test_ensure_superuser_does_not_promote_an_existing_ordinary_user(
    admin_env: pytest.MonkeyPatch,
) -> None:
    User.objects.create_user(username="admin", password="their-Own-pass-1")
    with pytest.raises(CommandError, match="exists but is not an active superuser"):
        ensure()
    user = User.objects.get(username="admin")
    assert (user.is_superuser, user.is_staff) == (False, False)
    assert check_password("their-Own-pass-1", user.password)


def test_ensure_superuser_for_an_existing_superuser_needs_no_password(
    admin_env: pytest.MonkeyPatch,
) -> None:
    ensure()
    admin_env.delenv("DJANGO_SUPERUSER_PASSWORD")
    assert "exists; nothing changed" in ensure()


def test_ensure_superuser_exits_non_zero_from_the_command_line(
    admin_env: pytest.MonkeyPatch,
) -> None:
    # What the migrate service and scripts/run.sh see: a failing exit status.
    admin_env.setenv("DJANGO_SUPERUSER_PASSWORD", "short")
    from django.core.management import execute_from_command_line

    with pytest.raises(SystemExit) as exit_info:
        execute_from_command_line(["manage.py", "ensure_superuser"])
    assert exit_info.value.code == 1
