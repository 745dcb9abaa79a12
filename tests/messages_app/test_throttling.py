"""Login, admin login and signup throttling, through the real views and pages.

Logins: django-axes (database), per address and per username. Signups:
django-ratelimit on Django's cache on Redis, per address.
"""

from __future__ import annotations

import time
import types
from typing import Any

import django_ratelimit.core
import pytest
from axes.models import AccessAttempt
from django.db.models import F
from django.test import Client

from messages_app.models import User

PASSWORD = "a-Strong-pass-9"  # make_user's
WRONG_LOGIN = "Please enter a correct username and password"
LOCKED_OUT = "Too many failed logins for this account or from your address"


def log_in(client: Client, username: str, password: str, *, path: str = "/accounts/login/") -> Any:
    return client.post(path, {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def pass_the_lockout(settings: Any) -> None:
    """Move every recorded attempt back by the lockout time, as if it had passed."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME)


@pytest.mark.django_db
def test_login_locks_out_after_the_failure_limit_even_for_the_right_password(
    client: Client, alice: User, settings: Any
) -> None:
    limit = settings.CHAT_LOGIN_FAILURE_LIMIT
    assert settings.AXES_FAILURE_LIMIT == limit
    for _ in range(limit - 1):
        response = log_in(client, "alice", "wrong-password")
        assert response.status_code == 200
        assert WRONG_LOGIN in response.content.decode()
    # The limit-th failure already answers with the lockout, and says how long.
    response = log_in(client, "alice", "wrong-password")
    assert response.status_code == 429
    assert LOCKED_OUT in response.content.decode()
    assert "try again in 15 min" in response.content.decode()
    # The next attempt, a failure or the right password, is refused the same way.
    for password in ("wrong-again", PASSWORD):
        response = log_in(client, "alice", password)
        assert response.status_code == 429
        assert LOCKED_OUT in response.content.decode()
        assert not signed_in(client)


@pytest.mark.django_db
def test_login_lockout_ends_after_the_lockout_time(
    client: Client, alice: User, settings: Any
) -> None:
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT):
        log_in(client, "alice", "wrong-password")
    assert log_in(client, "alice", PASSWORD).status_code == 429
    pass_the_lockout(settings)
    response = log_in(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


@pytest.mark.django_db
def test_login_lockout_holds_for_the_username_from_another_address(
    alice: User, settings: Any
) -> None:
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT):
        log_in(attacker, "alice", "wrong-password")
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    response = log_in(elsewhere, "alice", PASSWORD)
    assert response.status_code == 429
    assert LOCKED_OUT in response.content.decode()
    assert not signed_in(elsewhere)


@pytest.mark.django_db
def test_login_lockout_holds_for_the_address_across_usernames(
    alice: User, bob: User, settings: Any
) -> None:
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(settings.CHAT_LOGIN_FAILURE_LIMIT):
        log_in(attacker, f"guess-{n}", "wrong-password")
    response = log_in(attacker, "bob", PASSWORD)
    assert response.status_code == 429
    assert not signed_in(attacker)
    # Bob from his own address is not concerned.
    assert log_in(Client(REMOTE_ADDR="198.51.100.20"), "bob", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_login_success_resets_the_failure_count(client: Client, alice: User, settings: Any) -> None:
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT - 1):
        log_in(client, "alice", "wrong-password")
    assert log_in(client, "alice", PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT - 1):
        assert log_in(client, "alice", "wrong-password").status_code == 200
    assert log_in(client, "alice", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_admin_login_locks_out_after_the_failure_limit(client: Client, settings: Any) -> None:
    User.objects.create_superuser(username="root", password=PASSWORD, email="")
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT):
        response = log_in(client, "root", "wrong-password", path="/admin/login/")
    assert response.status_code == 429
    page = response.content.decode()
    assert LOCKED_OUT in page
    assert 'name="password"' in page  # the admin's own login page, with the reason
    response = log_in(client, "root", PASSWORD, path="/admin/login/")
    assert response.status_code == 429
    assert not signed_in(client)
    pass_the_lockout(settings)
    assert log_in(client, "root", PASSWORD, path="/admin/login/").status_code == 302
    assert signed_in(client)


@pytest.mark.django_db
def test_login_lockout_counts_the_client_behind_a_trusted_proxy(alice: User, settings: Any) -> None:
    settings.CHAT_TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = "10.0.0.2"
    for n in range(settings.CHAT_LOGIN_FAILURE_LIMIT):
        log_in(
            Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7"),
            f"guess-{n}",
            "wrong-password",
        )
    assert AccessAttempt.objects.filter(ip_address="203.0.113.7").exists()
    # Another client behind the same proxy is not locked out by the first one.
    other = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.20")
    assert log_in(other, "alice", PASSWORD).status_code == 302
    locked = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert log_in(locked, "alice", PASSWORD).status_code == 429


# --- signup ---------------------------------------------------------------------------


def sign_up(client: Client, username: str) -> Any:
    return client.post(
        "/accounts/signup/",
        {
            "username": username,
            "display_name": username.title(),
            "password1": "Correct-Horse-77",
            "password2": "Correct-Horse-77",
        },
    )


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Move django-ratelimit's clock forward by ``seconds`` (its windows follow it)."""

    def move(seconds: float) -> None:
        real = time.time
        fake = types.SimpleNamespace(time=lambda: real() + seconds)
        monkeypatch.setattr(django_ratelimit.core, "time", fake)

    return move


@pytest.mark.django_db
def test_signup_refuses_the_account_over_the_hourly_limit_and_stores_nothing(
    settings: Any, later: Any
) -> None:
    limit = settings.CHAT_SIGNUPS_PER_HOUR
    for n in range(limit):
        assert sign_up(Client(), f"person{n}").status_code == 302
    response = sign_up(Client(), "oneTooMany")
    assert response.status_code == 429
    page = response.content.decode()
    assert f"Too many accounts were created from your address this hour (at most {limit})" in page
    assert "Try again in" in page
    assert 'value="oneTooMany"' in page  # what was typed is kept
    assert not User.objects.filter(username="oneTooMany").exists()
    # Another address may still sign up.
    assert sign_up(Client(REMOTE_ADDR="198.51.100.20"), "elsewhere").status_code == 302
    # An hour later, this address may again.
    later(3600)
    assert sign_up(Client(), "oneTooMany").status_code == 302
    assert User.objects.filter(username="oneTooMany").exists()


@pytest.mark.django_db
def test_signup_forms_with_mistakes_do_not_count(settings: Any) -> None:
    settings.CHAT_SIGNUPS_PER_HOUR = 1
    client = Client()
    for _ in range(5):
        response = client.post("/accounts/signup/", {"username": "x", "password1": "a"})
        assert response.status_code == 200
    assert sign_up(client, "finally").status_code == 302


@pytest.mark.django_db
def test_signup_behind_a_trusted_proxy_counts_each_client(settings: Any) -> None:
    settings.CHAT_SIGNUPS_PER_HOUR = 1
    settings.CHAT_TRUSTED_PROXIES = ["10.0.0.2"]
    behind = {"REMOTE_ADDR": "10.0.0.2"}
    assert sign_up(Client(**behind, HTTP_X_FORWARDED_FOR="203.0.113.7"), "first").status_code == 302
    # The same client again, whatever it puts in front of the header itself.
    spoofed = Client(**behind, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7")
    assert sign_up(spoofed, "second").status_code == 429
    assert (
        sign_up(Client(**behind, HTTP_X_FORWARDED_FOR="198.51.100.9"), "third").status_code == 302
    )


@pytest.mark.django_db
def test_signup_ignores_forwarded_for_from_an_untrusted_peer(settings: Any) -> None:
    settings.CHAT_SIGNUPS_PER_HOUR = 1
    assert sign_up(Client(HTTP_X_FORWARDED_FOR="203.0.113.7"), "first").status_code == 302
    # A new X-Forwarded-For does not make a new client: the peer (127.0.0.1) is counted.
    assert sign_up(Client(HTTP_X_FORWARDED_FOR="198.51.100.9"), "second").status_code == 429
