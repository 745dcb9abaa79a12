from __future__ import annotations

import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatsite.env import (
    check_redis_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)
from tests.live import python_with_env


def test_env_str_uses_default_when_unset_or_blank() -> None:
    assert env_str("X", "d", environ={}) == "d"
    assert env_str("X", "d", environ={"X": "  "}) == "d"
    assert env_str("X", "d", environ={"X": " v "}) == "v"


@pytest.mark.parametrize(
    "raw,expected", [("true", True), ("1", True), ("On", True), ("no", False), ("0", False)]
)
def test_env_bool_accepts_common_spellings(raw: str, expected: bool) -> None:
    assert env_bool("DJANGO_DEBUG", False, environ={"DJANGO_DEBUG": raw}) is expected


def test_env_bool_rejects_anything_else_naming_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match="DJANGO_DEBUG='maybe' is not a boolean"):
        env_bool("DJANGO_DEBUG", False, environ={"DJANGO_DEBUG": "maybe"})


def test_env_int_rejects_text_and_out_of_range() -> None:
    with pytest.raises(ImproperlyConfigured, match="N='ten' is not a whole number"):
        env_int("N", 1, environ={"N": "ten"})
    with pytest.raises(ImproperlyConfigured, match="below the minimum of 1"):
        env_int("N", 1, minimum=1, environ={"N": "0"})
    with pytest.raises(ImproperlyConfigured, match="above the maximum of 10"):
        env_int("N", 1, maximum=10, environ={"N": "11"})
    assert env_int("N", 5, environ={"N": " 7 "}) == 7


def test_env_float_rejects_text_nan_and_negative() -> None:
    for raw in ("soon", "nan", "inf"):
        with pytest.raises(ImproperlyConfigured, match="GPT_TOKEN_TIMEOUT"):
            env_float("GPT_TOKEN_TIMEOUT", 1.0, minimum=0.1, environ={"GPT_TOKEN_TIMEOUT": raw})
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_float("GPT_TOKEN_TIMEOUT", 1.0, minimum=0.1, environ={"GPT_TOKEN_TIMEOUT": "-2"})
    assert env_float("T", 1.0, environ={"T": "2.5"}) == 2.5


def test_env_choice_is_case_insensitive_and_rejects_unknown() -> None:
    choices = ("token", "word", "sentence")
    assert env_choice("G", "word", choices, environ={"G": "Sentence"}) == "sentence"
    with pytest.raises(ImproperlyConfigured, match="G='line' is not one of: token, word, sentence"):
        env_choice("G", "word", choices, environ={"G": "line"})


def test_env_list_splits_on_commas() -> None:
    assert env_list("H", ["a"], environ={"H": "x.com, y.com,,"}) == ["x.com", "y.com"]
    assert env_list("H", ["a"], environ={}) == ["a"]


def test_parse_database_url_reads_every_part() -> None:
    db = parse_database_url("postgres://u%40x:p%2Fw@db.local:6543/chat?sslmode=require")
    assert db["USER"] == "u@x"
    assert db["PASSWORD"] == "p/w"
    assert db["HOST"] == "db.local"
    assert db["PORT"] == "6543"
    assert db["NAME"] == "chat"
    assert db["OPTIONS"] == {"sslmode": "require"}


@pytest.mark.parametrize(
    "url,message",
    [
        ("mysql://u@h/db", "must be a postgres:// URL"),
        ("postgres://u@h", "must name one database"),
        ("postgres://u@h/a/b", "must name one database"),
        ("postgres://u@h:notaport/db", "invalid port"),
    ],
)
def test_parse_database_url_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_database_url(url)


def test_check_redis_url_rejects_other_schemes() -> None:
    assert check_redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must be a redis:// URL"):
        check_redis_url("http://127.0.0.1:6379")
    with pytest.raises(ImproperlyConfigured, match="invalid port"):
        check_redis_url("redis://h:port/0")


def _settings_import(**env: str) -> subprocess.CompletedProcess[str]:
    return python_with_env("import chatsite.settings", **env)


def test_settings_refuse_production_without_a_secret_key() -> None:
    result = _settings_import(DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert (
        "DJANGO_SECRET_KEY must be set (to a long random value) when DJANGO_DEBUG is off"
        in result.stderr
    )


def test_settings_refuse_a_bad_granularity_at_start() -> None:
    result = _settings_import(GPT_STREAM_GRANULARITY="paragraph")
    assert result.returncode != 0
    assert (
        "GPT_STREAM_GRANULARITY='paragraph' is not one of: token, word, sentence" in result.stderr
    )


def test_settings_start_with_defaults() -> None:
    assert _settings_import().returncode == 0


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("CHAT_LOGIN_FAILURE_LIMIT", "0", "CHAT_LOGIN_FAILURE_LIMIT=0 is below the minimum of 1"),
        ("CHAT_LOGIN_LOCKOUT_SECONDS", "soon", "CHAT_LOGIN_LOCKOUT_SECONDS='soon' is not a whole"),
        ("CHAT_SIGNUPS_PER_HOUR", "0", "CHAT_SIGNUPS_PER_HOUR=0 is below the minimum of 1"),
        ("CHAT_POST_BURST", "-1", "CHAT_POST_BURST=-1 is below the minimum of 1"),
        ("CHAT_POST_BURST_SECONDS", "7200", "CHAT_POST_BURST_SECONDS=7200 is above the maximum"),
        ("CHAT_POSTS_PER_MINUTE", "0", "CHAT_POSTS_PER_MINUTE=0 is below the minimum of 1"),
        ("CHAT_ROOMS_PER_HOUR", "many", "CHAT_ROOMS_PER_HOUR='many' is not a whole number"),
        ("CHAT_MAX_SOCKETS_PER_USER", "0", "CHAT_MAX_SOCKETS_PER_USER=0 is below the minimum"),
        ("CHAT_SOCKET_LEASE_SECONDS", "1", "CHAT_SOCKET_LEASE_SECONDS=1 is below the minimum"),
        ("GPT_DAILY_TOKENS_PER_USER", "-5", "GPT_DAILY_TOKENS_PER_USER=-5 is below the minimum"),
        ("GPT_MAX_REVISIONS", "0", "GPT_MAX_REVISIONS=0 is below the minimum of 1"),
        ("GPT_MAX_REVISIONS", "101", "GPT_MAX_REVISIONS=101 is above the maximum"),
        ("CHAT_TRUSTED_PROXIES", "10.0.0.0/8,proxy", "CHAT_TRUSTED_PROXIES: 'proxy' is not"),
        ("CHAT_TRUSTED_PROXY_COUNT", "11", "CHAT_TRUSTED_PROXY_COUNT=11 is above the maximum"),
        ("CHAT_HISTORY_MAX_LIMIT", "0", "CHAT_HISTORY_MAX_LIMIT=0 is below the minimum of 1"),
        ("CHAT_HISTORY_MAX_LIMIT", "5000", "CHAT_HISTORY_MAX_LIMIT=5000 is above the maximum"),
        ("CHAT_HISTORY_PER_MINUTE", "0", "CHAT_HISTORY_PER_MINUTE=0 is below the minimum of 1"),
        ("CHAT_EDITS_PER_MINUTE", "often", "CHAT_EDITS_PER_MINUTE='often' is not a whole"),
    ],
)
def test_settings_refuse_a_bad_limit_at_start_naming_it(
    name: str, value: str, message: str
) -> None:
    result = _settings_import(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10", "GPT_FOLD_CHARS"),
        ("2000000", "GPT_FOLD_CHARS"),
        ("lots", "GPT_FOLD_CHARS"),
    ],
)
def test_settings_refuse_a_fold_size_out_of_range(value: str, message: str) -> None:
    result = _settings_import(GPT_FOLD_CHARS=value)
    assert result.returncode != 0
    assert message in result.stderr


def test_settings_refuse_both_ways_of_naming_the_proxies() -> None:
    result = _settings_import(CHAT_TRUSTED_PROXIES="10.0.0.0/8", CHAT_TRUSTED_PROXY_COUNT="1")
    assert result.returncode != 0
    assert "Set CHAT_TRUSTED_PROXIES or CHAT_TRUSTED_PROXY_COUNT, not both" in result.stderr


def test_settings_take_a_fold_size_in_range() -> None:
    result = python_with_env(
        "from django.conf import settings; import django; django.setup(); "
        "print(settings.GPT_FOLD_CHARS)",
        GPT_FOLD_CHARS="512",
        DJANGO_SETTINGS_MODULE="chatsite.settings",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "512"
