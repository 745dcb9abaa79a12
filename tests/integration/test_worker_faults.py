"""The worker's guarantees, each fault caused for real against a Celery worker process
started as an operator starts it: odd values from the model, Postgres connections
terminated mid-stream, more replies than threads, a worker killed as it takes a task."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connection

from chatsite.celery import app as celery_app
from messages_app import services
from messages_app.models import OPEN_STATUSES, Message, Room, Status, User
from tests import live
from tests.live import ModelServer
from tests.worker.live_worker import plain_worker, plain_worker_env, wait_for_log, wait_for_rows

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TEXT = "alpha beta gamma delta omega zeta eta theta"


@pytest.fixture
def limits(settings: Any) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 20
    settings.GPT_MAX_REPLIES_PER_MINUTE = 20


@asynccontextmanager
async def worker_running(
    model: ModelServer, log_dir: Path, name: str, *args: str, app: str = "chatsite", **env: str
) -> AsyncIterator[live.Process]:
    worker = plain_worker(plain_worker_env(model.url, **env), log_dir, name, app=app)
    worker.args += list(args)
    with live.running(worker):
        worker.start()
        await sync_to_async(live.wait_worker_ready)(worker)
        yield worker


async def ask(room: Room, user: User, body: str = "@gpt go") -> int:
    posted = await sync_to_async(services.message_post)(room=room, author=user, body=body)
    assert posted.reply is not None
    return posted.reply.pk


async def finished(reply_id: int, limit: float = 60) -> Message:
    [row] = await wait_for_rows(
        [reply_id], lambda row: row.status not in OPEN_STATUSES, limit=limit
    )
    return row


async def wait_for(predicate: Callable[[], bool], limit: float = 60) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.05)


def control(model: ModelServer, **update: Any) -> None:
    """``model.control`` for values UTF-8 cannot hold (lone surrogates): ``\\u`` escapes."""
    response = httpx.post(
        f"{model.url}/_control",
        content=json.dumps(update),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    response.raise_for_status()


@pytest.fixture
def fast_model(model_server: ModelServer) -> ModelServer:
    model_server.control(text=TEXT, tokens_per_second=0, first_token_delay=0)
    return model_server


# --- 3. nothing from the model reaches the database unchecked ----------------------


async def test_worker_stores_an_odd_model_name_cleaned_and_cut_to_the_field(
    fast_model: ModelServer, room: Room, alice: User, log_dir: Path
) -> None:
    control(fast_model, model_name="x\x00y\ud800" + "m" * 300)
    async with worker_running(fast_model, log_dir, "worker-odd-model"):
        row = await finished(await ask(room, alice))
    assert (row.status, row.body) == (Status.DONE, TEXT)
    assert row.model == ("xy\ufffd" + "m" * 300)[:128]


async def test_worker_stores_odd_usage_figures_clamped_or_dropped(
    fast_model: ModelServer, room: Room, alice: User, log_dir: Path
) -> None:
    fast_model.control(
        usage={"prompt_tokens": -5, "completion_tokens": 10**15, "total_tokens": "many"}
    )
    async with worker_running(fast_model, log_dir, "worker-odd-usage"):
        row = await finished(await ask(room, alice))
    assert (row.status, row.body) == (Status.DONE, TEXT)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, 2**31 - 1, None)


async def test_worker_stores_text_with_nul_and_lone_surrogates_cleaned(
    fast_model: ModelServer, room: Room, alice: User, log_dir: Path
) -> None:
    control(fast_model, text="bro\x00ken \ud83d text \udc4d here")
    async with worker_running(fast_model, log_dir, "worker-odd-text"):
        row = await finished(await ask(room, alice))
    # a lone half of a surrogate pair shows as U+FFFD, NUL is dropped
    assert (row.status, row.body) == (Status.DONE, "broken \ufffd text \ufffd here")


async def test_worker_stores_an_odd_error_event_message_cleaned(
    fast_model: ModelServer, room: Room, alice: User, log_dir: Path
) -> None:
    control(fast_model, error_after=2, error_message="over\x00load\udfff " + "!" * 5000)
    async with worker_running(fast_model, log_dir, "worker-odd-error"):
        row = await finished(await ask(room, alice))
    assert (row.status, row.body) == (Status.FAILED, "alpha beta")
    assert row.error.startswith("The model service reported an error: overload\ufffd !!!")
    assert "\x00" not in row.error and len(row.error) <= 2000


async def test_worker_sends_max_tokens_and_a_reply_cut_there_says_so(
    fast_model: ModelServer, room: Room, alice: User, log_dir: Path
) -> None:
    async with worker_running(fast_model, log_dir, "worker-max-tokens", GPT_MAX_REPLY_TOKENS="3"):
        row = await finished(await ask(room, alice))
    assert fast_model.stats()["last_request"]["max_tokens"] == 3
    assert (row.status, row.body) == (Status.FAILED, "alpha beta gamma")
    assert "limit of 3 tokens (GPT_MAX_REPLY_TOKENS)" in row.error


# --- 4. the database may blink -------------------------------------------------------


WORKER_APPLICATION = "chat-worker-under-test"


def terminate_worker_connections() -> int:
    """pg_terminate_backend every connection the worker under test holds (by the
    application_name its DATABASE_URL gives)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [WORKER_APPLICATION],
        )
        return cursor.fetchone()[0]


async def test_worker_survives_its_postgres_connections_terminated_mid_stream(
    model_server: ModelServer, token_room: Room, alice: User, log_dir: Path
) -> None:
    model_server.control(text=TEXT, tokens_per_second=50, first_token_delay=0, hold_after=3)
    database_url = live.stack_env(
        database_name=django_settings.DATABASES["default"]["NAME"], model_url=model_server.url
    )["DATABASE_URL"]
    async with worker_running(
        model_server,
        log_dir,
        "worker-pg-terminate",
        DATABASE_URL=f"{database_url}?application_name={WORKER_APPLICATION}",
    ) as worker:
        reply_id = await ask(token_room, alice)
        await wait_for(lambda: model_server.stats()["held_streams"] == 1)
        await wait_for_rows([reply_id], lambda row: row.body == "alpha beta gamma")
        # when every connection of the worker is cut while the model holds
        assert await sync_to_async(terminate_worker_connections)() >= 1
        model_server.control(release=True)
        # then the reply still ends done with the model's whole text, each word once
        row = await finished(reply_id)
        assert (row.status, row.body) == (Status.DONE, TEXT), worker.log()[-3000:]
        # and the worker did meet the cut connections (and retried)
        assert "database unavailable during" in worker.log()


@pytest.fixture
def token_room(db: None) -> Room:
    return Room.objects.create(name="Tokens", slug="tokens", granularity="token")


# --- 5. a watchdog that tells the truth ----------------------------------------------


async def test_watchdog_fails_no_reply_that_waits_for_a_busy_thread_or_a_quiet_model(
    model_server: ModelServer, room: Room, alice: User, log_dir: Path, limits: None
) -> None:
    # given a worker of two threads that beats every 0.2 s, and a model that holds
    # every stream after one token (quiet from then on)
    model_server.control(text=TEXT, tokens_per_second=0, first_token_delay=0, hold_after=1)
    async with worker_running(
        model_server, log_dir, "worker-busy", WORKER_CONCURRENCY="2", GPT_HEARTBEAT_INTERVAL="0.2"
    ):
        ids = [await ask(room, alice, f"@gpt {n}") for n in range(5)]
        await wait_for(lambda: model_server.stats()["held_streams"] == 2)
        # when the watchdog (the beat task's function, run here: the worker's two
        # threads are busy) runs again and again for three times GPT_STALE_AFTER
        stale_after = timedelta(seconds=3)
        started = time.monotonic()
        while time.monotonic() - started < 3 * stale_after.total_seconds():
            failed = await sync_to_async(services.replies_fail_stale)(
                stale_after=stale_after, queue_timeout=timedelta(seconds=900)
            )
            assert failed == []
            await asyncio.sleep(0.1)
        # then the two quiet streams and the three queued replies are all still open
        rows = await wait_for_rows(ids, lambda row: True)
        assert sorted(row.status for row in rows) == ["pending"] * 3 + ["streaming"] * 2
        # and once the model goes on, all five end done
        model_server.control(hold_after=-1, release=True)
        rows = await wait_for_rows(ids, lambda row: row.status not in OPEN_STATUSES)
        assert {(row.status, row.body) for row in rows} == {(Status.DONE, TEXT)}


# --- 6. no task lost silently --------------------------------------------------------


async def test_worker_killed_as_it_takes_a_task_the_reply_fails_saying_it_was_not_started(
    fast_model: ModelServer, room: Room, alice: User, log_dir: Path
) -> None:
    # given a worker killed the instant it starts a task, before the task claims its row
    dying = plain_worker(
        plain_worker_env(fast_model.url), log_dir, "worker-dying", app="tests.worker.dying_app"
    )
    with live.running(dying):
        dying.start()
        await sync_to_async(live.wait_worker_ready)(dying)
        reply_id = await ask(room, alice)
        assert dying.popen is not None
        await sync_to_async(dying.popen.wait)(60)
    assert (await sync_to_async(Message.objects.get)(pk=reply_id)).status == Status.PENDING
    # when a worker with the watchdog runs
    async with worker_running(
        fast_model,
        log_dir,
        "worker-after-the-kill",
        "-B",
        "-s",
        str(log_dir / "beat-kill"),
        GPT_QUEUE_TIMEOUT="1",
        GPT_WATCHDOG_INTERVAL="0.2",
    ) as worker:
        # then the reply ends failed, saying why, and was never sent to the model
        row = await finished(reply_id)
        assert row.status == Status.FAILED
        assert row.error == (
            "The reply waited more than 1 seconds in the queue and no worker started it; ask again."
        )
        assert fast_model.stats()["requests"] == 0
        # and should the broker hand the task out again (the kill came before the ack
        # reached Redis, so it redelivers it after the visibility timeout), the late
        # task finds the row closed and writes nothing
        await sync_to_async(celery_app.send_task)(
            "worker.tasks.stream_reply",
            args=[reply_id],
            queue=django_settings.CELERY_TASK_DEFAULT_QUEUE,
        )
        await wait_for_log(worker, f"reply {reply_id} is not pending")
    again = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert (again.status, again.error, again.version) == (row.status, row.error, row.version)
    assert fast_model.stats()["requests"] == 0
