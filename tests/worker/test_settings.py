"""The worker's settings: read and validated at start-up, each error naming its variable."""

from __future__ import annotations

import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatsite.env import check_at_most
from tests.live import python_with_env

SHOW = (
    "from chatsite import settings as s; "
    "print(s.CELERY_WORKER_POOL, s.CELERY_WORKER_CONCURRENCY, s.GPT_HEARTBEAT_INTERVAL, "
    "s.GPT_QUEUE_TIMEOUT, s.GPT_DB_RETRY_FOR, s.GPT_MAX_REPLY_TOKENS, s.GPT_MAX_REPLY_CHARS)"
)


def settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    return python_with_env(SHOW, **{"WORKER_CONCURRENCY": "", **env})


def test_worker_settings_defaults_are_the_threads_pool_of_fifty() -> None:
    result = settings_with()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["threads", "50", "10.0", "900.0", "30.0", "4000", "16000"]


def test_worker_settings_read_each_variable() -> None:
    result = settings_with(
        WORKER_CONCURRENCY="7",
        GPT_HEARTBEAT_INTERVAL="2",
        GPT_QUEUE_TIMEOUT="60",
        GPT_DB_RETRY_FOR="5",
        GPT_MAX_REPLY_TOKENS="100",
        GPT_MAX_REPLY_CHARS="500",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["threads", "7", "2.0", "60.0", "5.0", "100", "500"]


@pytest.mark.parametrize(
    "env,message",
    [
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY=0 is below the minimum of 1."),
        ({"WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY='many' is not a whole number."),
        ({"WORKER_CONCURRENCY": "5000"}, "WORKER_CONCURRENCY=5000 is above the maximum of 1000."),
        (
            {"GPT_HEARTBEAT_INTERVAL": "61"},
            "GPT_HEARTBEAT_INTERVAL=61 must be at most GPT_STALE_AFTER / 2 (60).",
        ),
        ({"GPT_HEARTBEAT_INTERVAL": "0"}, "GPT_HEARTBEAT_INTERVAL=0.0 is below the minimum"),
        ({"GPT_QUEUE_TIMEOUT": "0.5"}, "GPT_QUEUE_TIMEOUT=0.5 is below the minimum of 1.0."),
        ({"GPT_DB_RETRY_FOR": "-1"}, "GPT_DB_RETRY_FOR=-1.0 is below the minimum of 0.0."),
        ({"GPT_DB_RETRY_FOR": "nan"}, "GPT_DB_RETRY_FOR='nan' is not a finite number."),
        ({"GPT_MAX_REPLY_TOKENS": "0"}, "GPT_MAX_REPLY_TOKENS=0 is below the minimum of 1."),
        ({"GPT_MAX_REPLY_CHARS": "99"}, "GPT_MAX_REPLY_CHARS=99 is below the minimum of 100."),
    ],
)
def test_worker_settings_refuse_bad_values_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    result = settings_with(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_check_at_most_names_both_settings() -> None:
    assert check_at_most("A", 1.0, "B / 2", 2.0) == 1.0
    with pytest.raises(ImproperlyConfigured, match=r"A=3 must be at most B / 2 \(2\)\."):
        check_at_most("A", 3.0, "B / 2", 2.0)
