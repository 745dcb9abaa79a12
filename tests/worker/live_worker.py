"""Celery workers started the way an operator would, for the worker's integration tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from messages_app.models import Message
from tests import live


def plain_worker_env(model_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker on the test database that consumes the test queue
    (the queue the services of this process enqueue to), with leftover tasks dropped."""
    redis.Redis.from_url(settings.REDIS_URL).delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    env = live.stack_env(
        database_name=settings.DATABASES["default"]["NAME"], model_url=model_url, extra=extra
    )
    # The settings' default, not a developer's shell, must decide the pool's size.
    if "WORKER_CONCURRENCY" not in extra:
        env.pop("WORKER_CONCURRENCY", None)
    return env


def plain_worker(
    env: dict[str, str], log_dir: Path, name: str, app: str = "chatsite"
) -> live.Process:
    """``celery -A chatsite worker`` and nothing else that changes how it runs: pool and
    concurrency come from the settings (the queue and the database from ``env``)."""
    return live.Process(
        name, [str(live.BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO"], env, log_dir
    )


async def wait_for_rows(ids: list[int], predicate: Any, limit: float = 120) -> list[Message]:
    """Poll the database until every row of ``ids`` satisfies ``predicate``."""

    def rows() -> list[Message]:
        return list(Message.objects.filter(pk__in=ids).order_by("pk"))

    async with asyncio.timeout(limit):
        while True:
            found = await sync_to_async(rows)()
            if len(found) == len(ids) and all(predicate(row) for row in found):
                return found
            await asyncio.sleep(0.1)


async def wait_for_log(process: live.Process, text: str, limit: float = 60) -> None:
    async with asyncio.timeout(limit):
        while text not in process.log():  # noqa: ASYNC110 - another process's log file
            await asyncio.sleep(0.05)
