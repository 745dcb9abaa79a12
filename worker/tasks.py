"""Celery tasks: thin, they take ids and call the streaming code."""

from __future__ import annotations

from celery import shared_task

from worker.streaming import ReplyRun


@shared_task(name="worker.tasks.stream_reply")
def stream_reply(message_id: int) -> str:
    """Stream the @gpt reply ``message_id`` into its row; returns how it ended."""
    return ReplyRun(message_id).run()
