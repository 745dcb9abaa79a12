"""GET /healthz and the healthcheck probes of docker-compose.yml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client, override_settings

from chatsite.healthcheck import main, probe_beat, probe_web
from tests.live import free_port, python_with_env


@pytest.mark.django_db
def test_healthz_says_ok_when_postgres_and_redis_answer(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["chat.example.com"], SECURE_SSL_REDIRECT=True)
def test_healthz_answers_the_probe_whatever_the_host_and_https_settings() -> None:
    # Docker's probe asks http://127.0.0.1:8000 inside the container
    response = Client(HTTP_HOST="127.0.0.1:8000").get("/healthz")
    assert response.status_code == 200, response.content
    # every other page still refuses that host
    assert Client(HTTP_HOST="127.0.0.1:8000").get("/accounts/login/").status_code in (400, 301)


@pytest.mark.django_db
def test_healthz_names_redis_when_it_does_not_answer(client: Client) -> None:
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "postgres": "ok", "redis": "unavailable"}


def test_healthz_names_postgres_when_it_does_not_answer() -> None:
    # a fresh process whose database server is not there (nothing listens on the port)
    code = (
        "import django, json; django.setup(); from chatsite.health import health; "
        "print(json.dumps(health()))"
    )
    result = python_with_env(
        code,
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/chat",
        DATABASE_POOL_MAX_SIZE="0",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [
        503,
        {"status": "unavailable", "postgres": "unavailable", "redis": "ok"},
    ]


@pytest.mark.django_db
def test_healthz_refuses_other_methods(client: Client) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_web_probe_says_why_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    problem = probe_web(url, timeout=2)
    assert problem is not None and problem.startswith(url)


def test_beat_probe_says_why_without_a_running_beat(tmp_path: Path) -> None:
    pidfile = tmp_path / "beat.pid"
    assert "celery beat is not running" in (probe_beat(str(pidfile), timeout=2) or "")
    pidfile.write_text("not a pid")
    assert "celery beat is not running" in (probe_beat(str(pidfile), timeout=2) or "")


def test_healthcheck_command_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["web", "--url", f"http://127.0.0.1:{free_port()}/healthz", "--timeout", "2"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("unhealthy: http://127.0.0.1:")


def test_healthcheck_command_refuses_an_unknown_process() -> None:
    result = python_with_env("from chatsite.healthcheck import main; main(['proxy'])")
    assert result.returncode == 2
    assert "invalid choice: 'proxy'" in result.stderr
