"""The streaming run in this process, against the real model server over HTTP
(the real ``openai`` SDK), the real database and the Redis channel layer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from messages_app import services
from messages_app.models import Message, Room, Status, User
from tests.live import ModelServer, free_port
from tests.rows import stored
from worker import streaming

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "one two three four five six seven eight"


@pytest.fixture
def model(model_server: ModelServer, settings: Any) -> Iterator[ModelServer]:
    settings.OPENAI_BASE_URL = f"{model_server.url}/v1"
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MODEL = "test-model"
    settings.GPT_RETRY_BACKOFF = 0.01
    settings.GPT_MAX_RETRIES = 2
    model_server.control(text=TEXT, tokens_per_second=0, first_token_delay=0)
    yield model_server


@pytest.fixture(autouse=True)
def _no_task_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reply is streamed here, by the test; no worker gets the task.
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)


def ask(room: Room, user: User, body: str = "@gpt count") -> Message:
    reply = services.message_post(room=room, author=user, body=body).reply
    assert reply is not None
    return reply


def row(message: Message) -> Message:
    return stored(message.pk)


def run_until_held(
    model: ModelServer, reply: Message, body: str
) -> tuple[threading.Thread, list[str]]:
    """Stream ``reply`` in a thread until the model holds and the row has ``body``.

    Returns the thread and the list its outcome is appended to.
    """
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(streaming.ReplyRun(reply.pk).run()))
    thread.start()
    deadline = time.monotonic() + 30
    while (model.stats()["held_streams"] != 1 or row(reply).body != body) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert row(reply).body == body
    return thread, outcome


def test_run_streams_the_whole_reply(model: ModelServer, room: Room, alice: User) -> None:
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "done"
    done = row(reply)
    assert (done.status, done.body, done.model, done.completion_tokens) == (
        "done",
        TEXT,
        "test-model",
        8,
    )
    assert model.stats()["requests"] == 1


@pytest.mark.parametrize(
    "status,code,reason",
    [
        (401, "", "refused the API key (401)"),
        (403, "", "denied access"),
        (404, "", "does not know this model"),
        (400, "", "answered with an error (400)"),
        (429, "insufficient_quota", "quota is used up"),
    ],
)
def test_run_fails_fast_on_errors_a_retry_cannot_fix(
    model: ModelServer, room: Room, alice: User, status: int, code: str, reason: str
) -> None:
    model.control(fail_status=status, fail_code=code, fail_times=-1)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    failed = row(reply)
    assert failed.status == Status.FAILED
    assert reason in failed.error
    assert model.stats()["requests"] == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_run_retries_transient_errors_before_the_first_token(
    model: ModelServer, room: Room, alice: User, status: int
) -> None:
    model.control(fail_status=status, fail_times=2)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "done"
    assert row(reply).body == TEXT
    assert model.stats()["requests"] == 3


def test_run_gives_up_after_the_configured_retries(
    model: ModelServer, room: Room, alice: User
) -> None:
    model.control(fail_status=503, fail_times=-1)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    assert row(reply).error == "The model service answered with an error (503)."
    assert model.stats()["requests"] == 3  # 1 + GPT_MAX_RETRIES


def test_run_retries_connection_errors_then_fails_readably(
    model: ModelServer, room: Room, alice: User, settings: Any
) -> None:
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens
    reply = ask(room, alice)
    run = streaming.ReplyRun(reply.pk)
    assert run.run() == "failed"
    assert row(reply).error == "Lost the connection to the model service."
    assert run._stream is not None and run._stream.attempts == 3


@pytest.mark.parametrize(
    "behaviour,reason",
    [
        ({"drop_after": 3}, "Lost the connection to the model service."),
        ({"error_after": 3}, "The model service reported an error: demo stream error"),
        ({"malformed_after": 3}, "The model stream broke"),
    ],
)
def test_run_failure_after_tokens_keeps_the_partial_text(
    model: ModelServer, room: Room, alice: User, behaviour: dict[str, int], reason: str
) -> None:
    model.control(**behaviour)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    failed = row(reply)
    assert failed.body == "one two three"
    assert failed.error.startswith(reason)
    assert model.stats()["requests"] == 1  # never retried after a token


def test_run_times_out_when_no_token_comes(
    model: ModelServer, room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_TOKEN_TIMEOUT = 0.5
    model.control(stall_after=2)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    failed = row(reply)
    assert failed.body == "one two"
    assert failed.error == "The model sent nothing for 0.5 seconds (timeout)."


def test_run_stops_at_the_reply_time_limit(
    model: ModelServer, room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_REPLY_TIME_LIMIT = 1.0
    model.control(tokens_per_second=4)  # 8 tokens take 2 s
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    failed = row(reply)
    assert failed.error == "The reply took longer than 1 seconds and was stopped."
    assert 0 < len(failed.body) < len(TEXT) and TEXT.startswith(failed.body)
    deadline = time.monotonic() + 10
    while model.stats()["client_disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model.stats()["client_disconnects"] == 1


def test_cancel_closes_the_model_stream_and_nothing_is_appended_after(
    model: ModelServer, room: Room, alice: User
) -> None:
    model.control(hold_after=3)
    Room.objects.filter(pk=room.pk).update(granularity="token")
    reply = ask(room, alice)
    thread, outcome = run_until_held(model, reply, body="one two three")
    cancelled_at = time.time()
    services.reply_cancel(room=room, message_id=reply.pk)
    thread.join(30)
    assert outcome == ["cancelled"]
    stats = model.stats()
    assert stats["client_disconnects"] == 1
    print(f"upstream closed {stats['last_disconnect_at'] - cancelled_at:.3f}s after the cancel")
    model.control(release=True)
    time.sleep(0.2)
    final = row(reply)
    assert (final.status, final.body) == ("cancelled", "one two three")


def test_a_second_delivery_of_the_task_changes_nothing(
    model: ModelServer, room: Room, alice: User
) -> None:
    model.control(hold_after=2)
    reply = ask(room, alice)
    thread, outcome = run_until_held(model, reply, body="one ")
    assert streaming.ReplyRun(reply.pk).run() == "skipped"
    model.control(release=True)
    thread.join(30)
    assert outcome == ["done"]
    assert row(reply).body == TEXT
    assert model.stats()["requests"] == 1
