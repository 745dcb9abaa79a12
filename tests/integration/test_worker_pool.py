"""A worker started as Celery's docs start one (``celery -A chatsite worker``) takes its
pool and concurrency from the settings: it streams fifty replies at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from messages_app import services
from messages_app.models import Room, Status, User
from tests import live
from tests.live import ModelServer
from tests.worker.live_worker import plain_worker, plain_worker_env, wait_for_rows

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TEXT = "alpha beta gamma delta omega"
REPLIES = 50  # WORKER_CONCURRENCY's default


async def test_plain_celery_worker_streams_fifty_replies_at_once(
    model_server: ModelServer, make_user: Any, settings: Any, log_dir: Path
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = REPLIES
    settings.GPT_MAX_REPLIES_PER_MINUTE = REPLIES
    # given a model that sends two tokens of each reply, then holds every stream
    model_server.control(text=TEXT, tokens_per_second=0, first_token_delay=0, hold_after=2)
    worker = plain_worker(plain_worker_env(model_server.url), log_dir, "worker-plain")
    with live.running(worker):
        worker.start()
        await sync_to_async(live.wait_worker_ready)(worker)
        user: User = await sync_to_async(make_user)()
        room = await sync_to_async(Room.objects.create)(name="Many", slug="many")
        ids = []
        for n in range(REPLIES):
            posted = await sync_to_async(services.message_post)(
                room=room, author=user, body=f"@gpt number {n}"
            )
            assert posted.reply is not None
            ids.append(posted.reply.pk)

        # when all fifty are held by the model at the same moment
        async with asyncio.timeout(120):
            while model_server.stats()["held_streams"] != REPLIES:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # then all fifty rows are streaming together (none waits for a free thread)
        rows = await wait_for_rows(ids, lambda row: True)
        assert [row.status for row in rows] == [Status.STREAMING] * REPLIES, worker.log()[-3000:]

        # and once released, every one ends done with the model's whole text
        model_server.control(release=True)
        rows = await wait_for_rows(ids, lambda row: not row.is_open)
        assert {(row.status, row.body) for row in rows} == {(Status.DONE, TEXT)}
    # and the banner says what ran it: the settings' pool and concurrency
    assert "concurrency: 50 (thread)" in worker.log()
