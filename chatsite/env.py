"""Typed, validated reads of environment variables for the settings module.

Every reader raises ``ImproperlyConfigured`` naming the variable and what it
accepts, so a typo in a deployment fails at start-up with a readable message
instead of misbehaving later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean: use one of true/false, 1/0, yes/no, on/off."
    )


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}.")
    return number


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number.")
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}.")
    return number


def env_choice(
    name: str,
    default: str,
    choices: tuple[str, ...],
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    value = env_str(name, default, environ=environ).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")
    return value


def env_list(
    name: str, default: list[str], *, environ: Mapping[str, str] | None = None
) -> list[str]:
    value = _raw(name, environ)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def check_at_most(name: str, value: float, limit_name: str, limit: float) -> float:
    """Refuse ``value`` above ``limit``, which another setting decides (both named)."""
    if value > limit:
        raise ImproperlyConfigured(f"{name}={value:g} must be at most {limit_name} ({limit:g}).")
    return value


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> dict[str, Any]:
    """Turn ``postgres://user:password@host:port/dbname?opt=v`` into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// URL (postgres://user:password@host:5432/dbname), "
            f"got scheme {parts.scheme!r}."
        )
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise ImproperlyConfigured(f"{name} must name one database after the host, e.g. /chat.")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port.") from None
    options = dict(parse_qsl(parts.query))
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": dbname,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        "OPTIONS": options,
    }


def check_redis_url(url: str, *, name: str = "REDIS_URL") -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{name} must be a redis:// URL (redis://host:6379/0), got scheme {parts.scheme!r}."
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port.") from None
    return url


# What a production secret key must at least be: Django's own deploy check
# (security.W009) asks for 50 characters and flags its generated
# "django-insecure-" keys, which exist only for development.
SECRET_KEY_MIN_LENGTH = 50
INSECURE_SECRET_KEY_PREFIX = "django-insecure-"  # noqa: S105 - a prefix, not a key
MAKE_A_SECRET_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"  # noqa: S105 - a command


def check_production_secret_key(
    key: str, *, public: tuple[str, ...] = (), name: str = "DJANGO_SECRET_KEY"
) -> str:
    """Refuse a key anyone can know: one written in this repository (``public``),
    one starting with ``django-insecure-``, or one shorter than 50 characters.

    A public key lets anyone forge session cookies, password-reset links and
    signed data, so production stops at start instead of running with one.
    """
    how = f"Make one with: {MAKE_A_SECRET_KEY}"
    if not key:
        raise ImproperlyConfigured(f"{name} must be set when DJANGO_ENV=production. {how}")
    if key in public:
        raise ImproperlyConfigured(
            f"{name} is a placeholder published in this project's files (docker-compose.yml or "
            f"the settings), so it is no secret. {how}"
        )
    if key.startswith(INSECURE_SECRET_KEY_PREFIX):
        raise ImproperlyConfigured(
            f"{name} starts with {INSECURE_SECRET_KEY_PREFIX!r}: such keys are for development "
            f"only. {how}"
        )
    if len(key) < SECRET_KEY_MIN_LENGTH:
        raise ImproperlyConfigured(
            f"{name} is {len(key)} characters long; production needs at least "
            f"{SECRET_KEY_MIN_LENGTH}. {how}"
        )
    return key
