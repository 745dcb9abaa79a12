"""Failures caused for real: a killed worker, a task delivered twice, a cancel, a
restarted web process, a restarted Redis. Each asserts the final database row and
what the sockets show."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatsite.celery import app as celery_app
from messages_app.models import MemberRole, Membership, Message, Room, Status, User
from tests import live
from tests.conftest import Stack
from tests.live import ModelServer
from tests.sockets import open_socket, reply_finished, wait_for_reply_id, wait_until_held

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TEXT = "alpha beta gamma delta omega zeta eta theta iota kappa"


async def db_row(message_id: int) -> Message:
    return await sync_to_async(Message.objects.get)(pk=message_id)


async def wait_for_row(message_id: int, predicate: Any, limit: float = 60) -> Message:
    """Poll the database until the row satisfies ``predicate``."""
    async with asyncio.timeout(limit):
        while True:
            row = await db_row(message_id)
            if predicate(row):
                return row
            await asyncio.sleep(0.05)


async def wait_for_log(process: live.Process, text: str, limit: float = 30) -> None:
    async with asyncio.timeout(limit):
        while text not in process.log():  # noqa: ASYNC110 - another process's log file
            await asyncio.sleep(0.05)


@pytest.fixture
def held_model(model_server: ModelServer) -> ModelServer:
    """The model streams five tokens, then waits for ``release``."""
    model_server.control(text=TEXT, tokens_per_second=100, first_token_delay=0, hold_after=5)
    return model_server


@pytest.fixture
def token_room(db: None) -> Room:
    return Room.objects.create(name="Failures", slug="failures", granularity="token")


async def start_held_reply(
    stack: Stack, model: ModelServer, room: Room, user: User
) -> tuple[Any, int]:
    socket = await open_socket(stack, room, user)
    await socket.send({"type": "post", "body": "@gpt go"})
    reply_id = await wait_for_reply_id(socket)
    await wait_until_held(model)
    await socket.until(lambda view: view.body(reply_id) == "alpha beta gamma delta omega")
    return socket, reply_id


@pytest.fixture
def restore_stack(stack: Stack) -> Iterator[Stack]:
    """Give later tests a running web and worker, whatever this test stopped."""
    yield stack
    for process, start in ((stack.worker, stack.start_worker), (stack.web, stack.start_web)):
        if process.popen is None or process.popen.poll() is not None:
            start()


async def test_worker_killed_mid_stream_is_failed_by_the_watchdog(
    restore_stack: Stack, held_model: ModelServer, token_room: Room, alice: User, log_dir: Any
) -> None:
    stack = restore_stack
    socket, reply_id = await start_held_reply(stack, held_model, token_room, alice)

    # when the worker dies without a chance to clean up
    stack.worker.kill()
    # and a worker with Celery beat (the watchdog) runs, with a short stale limit
    env = {
        **stack.env,
        "GPT_STALE_AFTER": "2",
        "GPT_WATCHDOG_INTERVAL": "0.5",
        "GPT_HEARTBEAT_INTERVAL": "0.5",
    }
    schedule = str(log_dir / "beat-schedule")
    watchdog = live.celery_worker(env, log_dir, name="watchdog", extra_args=("-B", "-s", schedule))
    watchdog.start()
    try:
        # then the reply ends failed, with its partial text, in the database and the socket
        await socket.until(reply_finished(reply_id), limit=60)
    finally:
        watchdog.stop()
    row = await db_row(reply_id)
    assert row.status == Status.FAILED
    assert row.body == "alpha beta gamma delta omega"
    assert "interrupted" in row.error
    assert socket.view.rows[reply_id]["status"] == "failed"
    assert socket.view.body(reply_id) == row.body
    assert socket.view.rows[reply_id]["error"] == row.error
    await socket.close()


async def test_a_task_delivered_twice_never_doubles_text(
    stack: Stack, held_model: ModelServer, token_room: Room, alice: User
) -> None:
    socket, reply_id = await start_held_reply(stack, held_model, token_room, alice)
    # The broker hands the same reply out again (as after a visibility timeout).
    await sync_to_async(celery_app.send_task)(
        "worker.tasks.stream_reply", args=[reply_id], queue=stack.env["CELERY_TASK_QUEUE"]
    )
    await wait_for_log(stack.worker, f"reply {reply_id} is not pending")
    held_model.control(release=True)
    await socket.until(reply_finished(reply_id))
    row = await db_row(reply_id)
    assert (row.status, row.body) == ("done", TEXT)
    assert socket.view.body(reply_id) == TEXT
    assert socket.view.gaps == [] and socket.view.stale == []
    assert held_model.stats()["requests"] == 1
    await socket.close()


async def test_cancel_frame_closes_the_model_stream_and_freezes_the_text(
    stack: Stack, held_model: ModelServer, token_room: Room, alice: User, bob: User
) -> None:
    socket, reply_id = await start_held_reply(stack, held_model, token_room, alice)
    other = await open_socket(stack, token_room, bob)
    # Opening the room made Bob a member; stopping Alice's reply takes a moderator.
    await sync_to_async(Membership.objects.filter(room=token_room, user=bob).update)(
        role=MemberRole.MODERATOR
    )
    cancelled_at = time.time()
    await other.send({"type": "cancel", "id": reply_id})
    for watcher in (socket, other):
        await watcher.until(reply_finished(reply_id))
        assert watcher.view.status(reply_id) == "cancelled"
        assert watcher.view.body(reply_id) == "alpha beta gamma delta omega"
    async with asyncio.timeout(30):
        while held_model.stats()["client_disconnects"] < 1:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)
    closed_after = held_model.stats()["last_disconnect_at"] - cancelled_at
    print(f"model stream closed {closed_after * 1000:.0f} ms after the cancel frame")
    held_model.control(release=True)
    await asyncio.sleep(0.3)
    row = await db_row(reply_id)
    assert (row.status, row.body) == ("cancelled", "alpha beta gamma delta omega")
    await socket.close()
    await other.close()


async def test_web_restarted_mid_stream_sockets_converge_on_the_database(
    restore_stack: Stack, held_model: ModelServer, token_room: Room, alice: User
) -> None:
    stack = restore_stack
    socket, reply_id = await start_held_reply(stack, held_model, token_room, alice)
    stack.web.kill()
    held_model.control(release=True)
    # The worker keeps writing with no web process at all.
    row = await wait_for_row(reply_id, lambda r: r.status != Status.STREAMING)
    assert (row.status, row.body) == ("done", TEXT)
    stack.start_web()
    again = await open_socket(stack, token_room, alice)
    assert again.view.body(reply_id) == TEXT
    assert again.view.status(reply_id) == "done"
    # And the restarted web process serves new replies.
    held_model.control(hold_after=-1)
    await again.send({"type": "post", "body": "@gpt once more"})
    await again.until(lambda view: len(view.reply_ids()) == 2)
    second = again.view.reply_ids()[-1]
    await again.until(reply_finished(second))
    assert again.view.body(second) == TEXT
    await again.close()


async def test_redis_restarted_mid_stream_everything_recovers_without_restarts(
    stack: Stack, held_model: ModelServer, token_room: Room, alice: User, bob: User, log_dir: Any
) -> None:
    # A stack of its own on a private Redis, so the machine's Redis keeps running.
    redis_port, web_port = live.free_port(), live.free_port()
    redis_process = live.redis_server(redis_port, log_dir)
    env = {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    private = Stack(
        web=live.daphne(env, log_dir, web_port, name="web-private-redis"),
        worker=live.celery_worker(env, log_dir, name="worker-private-redis"),
        env=env,
        port=web_port,
        log_dir=log_dir,
    )
    redis_process.start()
    assert redis_process.popen is not None
    live.wait_for_port(redis_port, redis_process.popen)
    with live.running(private.web, private.worker, redis_process):
        private.start_worker()
        private.start_web()
        socket, reply_id = await start_held_reply(private, held_model, token_room, alice)

        # when Redis goes away mid-stream and comes back empty
        redis_process.kill()
        held_model.control(release=True)
        await asyncio.sleep(1)
        redis_process.start()
        live.wait_for_port(redis_port, redis_process.popen)

        # then the row is intact: the worker wrote every word to Postgres
        row = await wait_for_row(reply_id, lambda r: r.status != Status.STREAMING)
        assert (row.status, row.body) == ("done", TEXT), private.logs()

        # and a new socket sees it whole, and new replies flow through web and worker
        fresh = await open_socket(private, token_room, bob)
        assert (fresh.view.body(reply_id), fresh.view.status(reply_id)) == (TEXT, "done")
        held_model.control(hold_after=-1)
        async with asyncio.timeout(60):
            # The first post may come while the worker is still reconnecting.
            await fresh.send({"type": "post", "body": "@gpt are you back?"})
            await fresh.until(lambda view: len(view.reply_ids()) == 2)
        second = fresh.view.reply_ids()[-1]
        await fresh.until(reply_finished(second), limit=90)
        assert fresh.view.status(second) == "done", private.logs()
        assert fresh.view.body(second) == TEXT
        # the socket that lived through the outage hears the new reply too
        await socket.until(reply_finished(second), limit=60)
        assert socket.view.status(second) == "done"
        await socket.close()
        await fresh.close()
