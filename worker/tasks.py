"""Celery tasks: thin, they take ids and call the streaming code."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from messages_app import services
from worker.streaming import ReplyRun


@shared_task(name="worker.tasks.stream_reply")
def stream_reply(message_id: int) -> str:
    """Stream the @gpt reply ``message_id`` into its row; returns how it ended."""
    return ReplyRun(message_id).run()


@shared_task(name="worker.tasks.fail_stale_replies")
def fail_stale_replies() -> list[int]:
    """The watchdog (Celery beat): fail the open replies no worker is running."""
    return services.replies_fail_stale(
        stale_after=timedelta(seconds=settings.GPT_STALE_AFTER),
        queue_timeout=timedelta(seconds=settings.GPT_QUEUE_TIMEOUT),
    )
