"""The heartbeat and the watchdog: a reply is failed when no worker runs it, never
because its model is quiet or its request is queued behind busy threads."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from messages_app import services
from messages_app.models import Message, Room, Status, User
from worker.heartbeat import Heartbeat

pytestmark = pytest.mark.django_db(transaction=True)

STALE = timedelta(minutes=2)
QUEUE = timedelta(minutes=15)


@pytest.fixture(autouse=True)
def _no_task_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)


def ask(room: Room, user: User, body: str) -> Message:
    reply = services.message_post(room=room, author=user, body=body).reply
    assert reply is not None
    return reply


def claimed(room: Room, user: User, body: str) -> tuple[Message, Any]:
    reply = ask(room, user, body)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text="partial")
    return reply, attempt


def row(message: Message) -> Message:
    return Message.objects.get(pk=message.pk)


def aged(message: Message, **fields: timedelta) -> None:
    now = timezone.now()
    Message.objects.filter(pk=message.pk).update(**{k: now - v for k, v in fields.items()})


def test_watchdog_fails_a_streaming_reply_whose_heartbeat_stopped_keeping_its_text(
    room: Room, alice: User
) -> None:
    dead, _ = claimed(room, alice, "@gpt a")
    aged(dead, heartbeat_at=timedelta(minutes=3))
    assert services.replies_fail_stale(stale_after=STALE, queue_timeout=QUEUE) == [dead.pk]
    failed = row(dead)
    assert (failed.status, failed.body) == (Status.FAILED, "partial")
    assert "interrupted" in failed.error


def test_watchdog_spares_a_streaming_reply_with_a_fresh_heartbeat_however_old_its_text(
    room: Room, alice: User
) -> None:
    # a quiet model (or a request being retried): no write for long, but the run beats
    quiet, attempt = claimed(room, alice, "@gpt a")
    aged(quiet, updated_at=timedelta(minutes=30), heartbeat_at=timedelta(minutes=30))
    assert services.replies_heartbeat(runs=[(quiet.pk, attempt)]) == 1
    assert services.replies_fail_stale(stale_after=STALE, queue_timeout=QUEUE) == []
    assert row(quiet).status == Status.STREAMING


def test_watchdog_leaves_pending_replies_until_the_queue_timeout_and_then_says_so(
    room: Room, alice: User, bob: User
) -> None:
    # waiting behind busy threads for longer than GPT_STALE_AFTER is not a failure
    queued = ask(room, alice, "@gpt a")
    aged(queued, updated_at=timedelta(minutes=10))
    lost = ask(room, bob, "@gpt b")
    aged(lost, updated_at=timedelta(minutes=16))
    assert services.replies_fail_stale(stale_after=STALE, queue_timeout=QUEUE) == [lost.pk]
    assert row(queued).status == Status.PENDING
    failed = row(lost)
    assert failed.status == Status.FAILED
    assert failed.error == (
        "The reply waited more than 900 seconds in the queue and no worker started it; ask again."
    )


def test_replies_heartbeat_writes_only_the_live_attempts_and_changes_no_version(
    room: Room, alice: User, bob: User
) -> None:
    mine, attempt = claimed(room, alice, "@gpt a")
    other, _ = claimed(room, bob, "@gpt b")
    aged(mine, heartbeat_at=timedelta(minutes=5))
    aged(other, heartbeat_at=timedelta(minutes=5))
    before = row(mine)
    stale_attempt = services.replies_heartbeat(runs=[(other.pk, attempt)])
    assert stale_attempt == 0
    assert services.replies_heartbeat(runs=[(mine.pk, attempt)]) == 1
    after = row(mine)
    assert after.heartbeat_at > before.heartbeat_at
    assert (after.version, after.updated_at) == (before.version, before.updated_at)
    assert row(other).heartbeat_at < after.heartbeat_at


def test_heartbeat_thread_beats_for_a_registered_run_until_it_unregisters(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_HEARTBEAT_INTERVAL = 0.05
    reply, attempt = claimed(room, alice, "@gpt a")
    aged(reply, heartbeat_at=timedelta(minutes=5))
    old = row(reply).heartbeat_at
    beats = Heartbeat()
    unregister = beats.register(reply.pk, attempt)
    deadline = time.monotonic() + 60
    while row(reply).heartbeat_at == old:
        assert time.monotonic() < deadline, "no heartbeat was written"
        time.sleep(0.02)
    unregister()
    assert beats.beat() == 0  # nothing left to beat for


def test_heartbeat_survives_a_database_error_and_beats_again(
    room: Room, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    reply, attempt = claimed(room, alice, "@gpt a")
    beats = Heartbeat()
    unregister = beats.register(reply.pk, attempt)
    real = services.replies_heartbeat

    def down(*, runs: Any) -> int:
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(services, "replies_heartbeat", down)
    assert beats.beat() == 0
    monkeypatch.setattr(services, "replies_heartbeat", real)
    assert beats.beat() == 1
    unregister()  # or its thread beats on, past the end of the test database
