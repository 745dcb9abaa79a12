"""``GET /healthz``: whether this web process can serve, for Docker's healthcheck.

It answers 200 when Postgres and Redis both answer, 503 naming the one that
does not. It runs as the first middleware, before the host check, the HTTPS
redirect and sessions: the probe asks for ``http://127.0.0.1:8000/healthz``
from inside the container, whatever ``DJANGO_ALLOWED_HOSTS`` and
``DJANGO_HTTPS`` say, and must not be redirected or refused for its Host. The
reply names no host, version or error text, only which dependency failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

PATH = "/healthz"
# Each dependency gets this long to answer; Docker's probe waits 5 s in all.
TIMEOUT_SECONDS = 2.0


def check_postgres() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


CHECKS: dict[str, Callable[[], None]] = {"postgres": check_postgres, "redis": check_redis}


def health() -> tuple[int, dict[str, str]]:
    """(HTTP status, {dependency: "ok" or "unavailable"}) as the probe sees them."""
    report: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception:  # any failure means "not healthy": say which, log why
            logger.warning("health check: %s is unavailable", name, exc_info=True)
            report[name] = "unavailable"
        else:
            report[name] = "ok"
    healthy = all(value == "ok" for value in report.values())
    return (200 if healthy else 503), {"status": "ok" if healthy else "unavailable", **report}


class HealthCheckMiddleware:
    """Answer ``GET``/``HEAD /healthz`` itself; pass every other request on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != PATH:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = HttpResponse(status=405)
            response["Allow"] = "GET, HEAD"
            return response
        status, report = health()
        response = HttpResponse(json.dumps(report), status=status, content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response
