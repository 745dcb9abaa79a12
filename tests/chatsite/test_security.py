from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from django.test import Client

from messages_app.models import Message, Room, User
from tests.live import python_with_env

pytestmark = pytest.mark.django_db


def test_pages_send_a_content_security_policy_without_inline_script(client: Client) -> None:
    response = client.get("/admin/login/", HTTP_HOST="localhost")
    policy = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["connect-src"] == "'self' ws://localhost wss://localhost"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path,data",
    [
        ("/admin/login/", {"username": "alice", "password": "a-Strong-pass-9"}),
        ("/accounts/login/", {"username": "alice", "password": "a-Strong-pass-9"}),
        (
            "/accounts/signup/",
            {"username": "mallory", "password1": "x-Strong-pass-1", "password2": "x-Strong-pass-1"},
        ),
        ("/accounts/logout/", {}),
        ("/", {"name": "Injected room"}),
        ("/rooms/general/", {"body": "forged message"}),
    ],
)
def test_every_form_refuses_a_post_without_a_csrf_token(
    path: str, data: dict[str, str], alice: Any, room: Room
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(path, data)
    assert response.status_code == 403
    assert not Room.objects.filter(name="Injected room").exists()
    assert not Message.objects.exists()
    assert not User.objects.filter(username="mallory").exists()
    # the same client is still signed in: logout was refused too
    assert client.get("/").status_code == 200


def _settings(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, chatsite.settings as s; print(json.dumps({k: getattr(s, k, None) for k in "
        "['DEBUG', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_PROXY_SSL_HEADER', "
        "'SECURE_HSTS_SECONDS', 'SESSION_COOKIE_HTTPONLY']}))"
    )
    return python_with_env(code, **env)


KEY = "k" * 50


def test_production_refuses_debug() -> None:
    result = _settings(DJANGO_ENV="production", DJANGO_DEBUG="true", DJANGO_SECRET_KEY=KEY)
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be off when DJANGO_ENV=production" in result.stderr


@pytest.mark.parametrize("key", ["", "short-key"])
def test_production_refuses_a_missing_or_short_secret_key(key: str) -> None:
    result = _settings(DJANGO_ENV="production", DJANGO_SECRET_KEY=key)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_production_refuses_the_development_key() -> None:
    from chatsite.settings import _DEV_SECRET_KEY

    result = _settings(DJANGO_ENV="production", DJANGO_SECRET_KEY=_DEV_SECRET_KEY)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is a placeholder published in this project's files" in result.stderr


def compose_default_secret_key() -> str:
    from tests.deploy.compose import load_compose

    return load_compose({})["services"]["web"]["environment"]["DJANGO_SECRET_KEY"]


def test_compose_default_key_is_the_placeholder_production_refuses() -> None:
    from chatsite.settings import COMPOSE_PLACEHOLDER_SECRET_KEY

    assert compose_default_secret_key() == COMPOSE_PLACEHOLDER_SECRET_KEY


@pytest.mark.parametrize(
    "key,message",
    [
        (
            "",
            "DJANGO_SECRET_KEY must be set when DJANGO_ENV=production",
        ),
        (
            "COMPOSE",
            "DJANGO_SECRET_KEY is a placeholder published in this project's files",
        ),
        (
            "django-insecure-" + "x" * 60,
            "DJANGO_SECRET_KEY starts with 'django-insecure-': such keys are for development only",
        ),
        ("k" * 49, "DJANGO_SECRET_KEY is 49 characters long; production needs at least 50"),
    ],
)
def test_production_refuses_a_public_or_weak_secret_key_and_says_how_to_make_one(
    key: str, message: str
) -> None:
    if key == "COMPOSE":
        key = compose_default_secret_key()
    # DJANGO_DEBUG off as in the compose file: only DJANGO_ENV=production refuses these
    result = _settings(DJANGO_ENV="production", DJANGO_DEBUG="false", DJANGO_SECRET_KEY=key)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'" in (
        result.stderr
    )


def test_production_accepts_a_key_of_50_random_characters() -> None:
    import secrets

    key = secrets.token_urlsafe(50)
    assert len(key) >= 50
    result = _settings(DJANGO_ENV="production", DJANGO_SECRET_KEY=key)
    assert result.returncode == 0, result.stderr


def test_development_without_debug_still_starts_with_the_compose_placeholder() -> None:
    # `docker compose up` on a laptop: DEBUG off, no DJANGO_ENV, no key of one's own
    result = _settings(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=compose_default_secret_key())
    assert result.returncode == 0, result.stderr


def test_production_runs_without_debug_and_with_secure_cookies_behind_https() -> None:
    result = _settings(DJANGO_ENV="production", DJANGO_SECRET_KEY=KEY, DJANGO_HTTPS="true")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_HSTS_SECONDS"] == 31536000
    assert values["SESSION_COOKIE_HTTPONLY"] is True


def test_development_cookies_are_not_marked_secure() -> None:
    result = _settings()
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["DEBUG"] is True
    assert values["SESSION_COOKIE_SECURE"] is None
