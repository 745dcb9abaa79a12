from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection

from chatsite.celery import app as celery_app
from messages_app import events, services
from messages_app.models import Message, Room, Status, User
from messages_app.services import ClientError


@dataclass
class Outbox:
    """What the services sent after commit: frames per room, and queued tasks."""

    frames: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    tasks: list[tuple[str, list[Any]]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [frame["type"] for _, frame in self.frames]


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch) -> Outbox:
    box = Outbox()
    monkeypatch.setattr(
        events,
        "send_to_room",
        lambda room_id, event: box.frames.append((room_id, json.loads(event["frame"]))),
    )
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, args=None, **kw: box.tasks.append((name, args))
    )
    return box


def test_message_post_stores_a_user_message_and_broadcasts_it_on_commit(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = services.message_post(room=room, author=alice, body="hello all")
    assert result.created and result.reply is None
    row = Message.objects.get()
    assert (row.body, row.role, row.status, row.version, row.author) == (
        "hello all",
        "user",
        "done",
        1,
        alice,
    )
    assert len(callbacks) == 1
    assert outbox.frames == [
        (room.pk, {"type": "message", "message": outbox.frames[0][1]["message"]})
    ]
    sent = outbox.frames[0][1]["message"]
    assert (sent["id"], sent["author"], sent["room"], sent["body"]) == (
        row.pk,
        "Alice",
        "general",
        "hello all",
    )
    assert outbox.tasks == []


def test_message_post_with_mention_adds_pending_placeholder_and_enqueues(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = services.message_post(room=room, author=alice, body="hey @GPT, a haiku?")
    assert result.reply is not None
    reply = Message.objects.get(pk=result.reply.pk)
    assert (reply.role, reply.status, reply.body, reply.author, reply.reply_to_id) == (
        "assistant",
        "pending",
        "",
        None,
        result.message.pk,
    )
    assert outbox.types() == ["message", "message"]
    assert outbox.frames[1][1]["message"]["status"] == "pending"
    assert outbox.tasks == [("worker.tasks.stream_reply", [reply.pk])]


def test_message_post_sends_nothing_when_the_transaction_rolls_back(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.message_post(room=room, author=alice, body="@gpt hi")
            raise RuntimeError("boom")
    assert callbacks == []
    assert not Message.objects.exists()


def test_message_post_same_client_id_stores_one_message(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    client_id = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        first = services.message_post(
            room=room, author=alice, body="@gpt once", client_id=client_id
        )
        again = services.message_post(
            room=room, author=alice, body="@gpt once", client_id=str(client_id)
        )
    assert first.created and not again.created
    assert again.message.pk == first.message.pk
    assert again.reply is not None and first.reply is not None and again.reply.pk == first.reply.pk
    assert Message.objects.count() == 2
    assert len(outbox.tasks) == 1


def test_message_post_same_client_id_from_another_user_is_another_message(
    room: Room, alice: User, bob: User, outbox: Outbox
) -> None:
    client_id = uuid.uuid4()
    services.message_post(room=room, author=alice, body="a", client_id=client_id)
    services.message_post(room=room, author=bob, body="b", client_id=client_id)
    assert Message.objects.count() == 2


@pytest.mark.parametrize(
    "body,code",
    [
        (None, "invalid_body"),
        (42, "invalid_body"),
        (["x"], "invalid_body"),
        ("", "empty_body"),
        ("   \n\t ", "empty_body"),
        ("\x00\x01", "empty_body"),
        ("x" * 4001, "body_too_long"),
    ],
)
def test_message_post_rejects_bad_bodies_and_writes_nothing(
    room: Room, alice: User, outbox: Outbox, body: Any, code: str
) -> None:
    with pytest.raises(ClientError) as caught:
        services.message_post(room=room, author=alice, body=body)
    assert caught.value.code == code
    assert not Message.objects.exists()
    assert outbox.frames == []


def test_message_post_rejects_a_client_id_that_is_not_a_uuid(room: Room, alice: User) -> None:
    with pytest.raises(ClientError, match="client_id must be a UUID"):
        services.message_post(room=room, author=alice, body="hi", client_id="abc")
    assert not Message.objects.exists()


def test_message_post_strips_nul_and_control_characters(
    room: Room, alice: User, outbox: Outbox
) -> None:
    result = services.message_post(room=room, author=alice, body="a\x00b\x07c\r\nd\te")
    assert Message.objects.get(pk=result.message.pk).body == "abc\nd\te"


def test_message_post_accepts_a_body_at_the_limit(room: Room, alice: User, outbox: Outbox) -> None:
    body = "é" * 4000
    result = services.message_post(room=room, author=alice, body=body)
    assert Message.objects.get(pk=result.message.pk).body == body


def _pending_reply(room: Room, alice: User) -> Message:
    reply = services.message_post(room=room, author=alice, body="@gpt go").reply
    assert reply is not None
    return reply


def test_reply_lifecycle_claim_append_finish(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    reply = _pending_reply(room, alice)
    outbox.frames.clear()
    with django_capture_on_commit_callbacks(execute=True):
        attempt = services.reply_claim(message_id=reply.pk, model="m1")
        assert attempt is not None
        first = services.reply_append(message_id=reply.pk, attempt=attempt, text="Hello")
        second = services.reply_append(message_id=reply.pk, attempt=attempt, text=" wörld 👋")
        done = services.reply_finish(
            message_id=reply.pk,
            attempt=attempt,
            model="m1-2024",
            usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        )
    assert first is not None and (first.version, first.offset) == (3, 0)
    assert second is not None and (second.version, second.offset) == (4, 5)
    assert done is not None
    row = Message.objects.get(pk=reply.pk)
    assert (row.body, row.status, row.version, row.model) == (
        "Hello wörld 👋",
        "done",
        5,
        "m1-2024",
    )
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (5, 3, 8)
    assert row.finished_at is not None
    assert outbox.types() == ["message", "delta", "delta", "message"]
    assert outbox.frames[0][1]["message"]["status"] == "streaming"
    assert outbox.frames[1][1] == {
        "type": "delta",
        "id": reply.pk,
        "version": 3,
        "offset": 0,
        "text": "Hello",
    }
    assert outbox.frames[2][1] == {
        "type": "delta",
        "id": reply.pk,
        "version": 4,
        "offset": 5,
        "text": " wörld 👋",
    }
    final = outbox.frames[3][1]["message"]
    assert (final["status"], final["version"], final["body"]) == ("done", 5, "Hello wörld 👋")


def test_reply_claim_only_once(room: Room, alice: User, outbox: Outbox) -> None:
    reply = _pending_reply(room, alice)
    assert services.reply_claim(message_id=reply.pk, model="m") is not None
    assert services.reply_claim(message_id=reply.pk, model="m") is None


def test_reply_append_after_cancel_touches_nothing(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    reply = _pending_reply(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text="partial")
    with django_capture_on_commit_callbacks(execute=True):
        services.reply_cancel(room=room, message_id=reply.pk)
    outbox.frames.clear()
    assert services.reply_append(message_id=reply.pk, attempt=attempt, text=" more") is None
    assert services.reply_finish(message_id=reply.pk, attempt=attempt) is None
    row = Message.objects.get(pk=reply.pk)
    assert (row.body, row.status) == ("partial", "cancelled")
    assert outbox.frames == []


def test_reply_append_with_a_stale_attempt_touches_nothing(
    room: Room, alice: User, outbox: Outbox
) -> None:
    reply = _pending_reply(room, alice)
    assert services.reply_claim(message_id=reply.pk, model="m") is not None
    assert services.reply_append(message_id=reply.pk, attempt=uuid.uuid4(), text="x") is None
    assert Message.objects.get(pk=reply.pk).body == ""


def test_reply_append_is_one_statement_that_leaves_the_body_alone(
    room: Room, alice: User, outbox: Outbox
) -> None:
    from django.test.utils import CaptureQueriesContext

    reply = _pending_reply(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    with CaptureQueriesContext(connection) as queries:
        services.reply_append(message_id=reply.pk, attempt=attempt, text="x")
    (query,) = queries
    # the text goes into a chunk row; the message row's body is not rewritten
    assert "INSERT INTO messages_app_replychunk" in query["sql"]
    assert "body" not in query["sql"].split("SET", 1)[1].split("FROM", 1)[0]


def test_reply_fail_keeps_partial_text_and_reason(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    reply = _pending_reply(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text="half a")
    with django_capture_on_commit_callbacks(execute=True):
        services.reply_fail(message_id=reply.pk, attempt=attempt, error="Lost the connection.")
    row = Message.objects.get(pk=reply.pk)
    assert (row.body, row.status, row.error) == ("half a", "failed", "Lost the connection.")
    assert outbox.frames[-1][1]["message"]["error"] == "Lost the connection."


@pytest.mark.parametrize("bad_id", ["7", None, 1.5, True, [1]])
def test_reply_cancel_rejects_ids_that_are_not_integers(room: Room, bad_id: Any) -> None:
    with pytest.raises(ClientError) as caught:
        services.reply_cancel(room=room, message_id=bad_id)
    assert caught.value.code == "invalid_id"


def test_reply_cancel_refuses_unknown_foreign_user_and_finished_messages(
    room: Room, alice: User, outbox: Outbox
) -> None:
    other = Room.objects.create(name="Other", slug="other")
    foreign = services.message_post(room=other, author=alice, body="@gpt elsewhere").reply
    user_message = services.message_post(room=room, author=alice, body="plain").message
    reply = _pending_reply(room, alice)
    services.reply_cancel(room=room, message_id=reply.pk)
    assert foreign is not None
    for message_id, code in [
        (999999, "not_found"),
        (foreign.pk, "not_found"),
        (user_message.pk, "not_found"),
        (reply.pk, "not_streaming"),
    ]:
        with pytest.raises(ClientError) as caught:
            services.reply_cancel(room=room, message_id=message_id)
        assert caught.value.code == code
    assert Message.objects.get(pk=foreign.pk).status == Status.PENDING


def test_reply_regenerate_restarts_a_failed_reply(
    room: Room, alice: User, outbox: Outbox, django_capture_on_commit_callbacks: Any
) -> None:
    reply = _pending_reply(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text="oops")
    services.reply_fail(message_id=reply.pk, attempt=attempt, error="x")
    outbox.tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.reply_regenerate(message_id=reply.pk, actor=None)
    row = Message.objects.get(pk=reply.pk)
    assert (row.status, row.body, row.error, row.attempt) == ("pending", "", "", None)
    assert outbox.tasks == [("worker.tasks.stream_reply", [reply.pk])]
    with pytest.raises(ClientError, match="is pending"):
        services.reply_regenerate(message_id=reply.pk, actor=None)


def test_room_create_makes_unique_slugs_and_validates(alice: User) -> None:
    first = services.room_create(name="  Team   Chat ", created_by=alice)
    second = services.room_create(name="Team chat", created_by=alice)
    assert (first.name, first.slug, second.slug) == ("Team Chat", "team-chat", "team-chat-2")
    with pytest.raises(ClientError, match="needs a name"):
        services.room_create(name=" ", created_by=alice)
    with pytest.raises(ClientError, match="at most 80"):
        services.room_create(name="x" * 81, created_by=alice)
    with pytest.raises(ClientError, match="letters or digits"):
        services.room_create(name="!!!", created_by=alice)
    with pytest.raises(ClientError, match="taken"):
        services.room_create(name="Again", slug="team-chat", created_by=alice)
    with pytest.raises(ClientError, match="lowercase letters"):
        services.room_create(name="Again", slug="Bad Slug", created_by=alice)
    with pytest.raises(ClientError, match="granularity"):
        services.room_create(name="G", granularity="line", created_by=alice)
    assert Room.objects.count() == 2


def test_message_post_refuses_more_open_replies_than_the_limit(
    room: Room, alice: User, bob: User, outbox: Outbox, settings: Any
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 2
    services.message_post(room=room, author=alice, body="@gpt one")
    services.message_post(room=room, author=alice, body="@gpt two")
    with pytest.raises(ClientError) as caught:
        services.message_post(room=room, author=alice, body="@gpt three")
    assert caught.value.code == "rate_limited"
    assert "2 @gpt replies in progress" in caught.value.detail
    assert not Message.objects.filter(body="@gpt three").exists()
    # Plain messages are not limited, nor are other users.
    services.message_post(room=room, author=alice, body="just talking")
    services.message_post(room=room, author=bob, body="@gpt mine")
    assert Message.objects.filter(role="assistant").count() == 3


def test_message_post_open_limit_frees_up_when_a_reply_ends(
    room: Room, alice: User, outbox: Outbox, settings: Any
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 1
    first = _pending_reply(room, alice)
    services.reply_cancel(room=room, message_id=first.pk)
    assert services.message_post(room=room, author=alice, body="@gpt again").reply is not None


def test_message_post_refuses_more_replies_a_minute_than_the_limit(
    room: Room, alice: User, outbox: Outbox, settings: Any
) -> None:
    settings.GPT_MAX_REPLIES_PER_MINUTE = 2
    for _ in range(2):
        reply = _pending_reply(room, alice)
        services.reply_cancel(room=room, message_id=reply.pk)
    with pytest.raises(ClientError, match="At most 2 @gpt requests a minute"):
        services.message_post(room=room, author=alice, body="@gpt third")
    # An hour later the window has moved on.
    from datetime import timedelta

    from django.utils import timezone

    Message.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert services.message_post(room=room, author=alice, body="@gpt later").reply is not None


def test_reply_is_failed_at_once_when_the_task_cannot_be_queued(
    room: Room,
    alice: User,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        result = services.message_post(room=room, author=alice, body="@gpt hello?")
    assert result.reply is not None
    reply = Message.objects.get(pk=result.reply.pk)
    assert reply.status == Status.FAILED
    assert reply.error == "The reply could not be queued (the task broker is unreachable)."
    assert Message.objects.get(pk=result.message.pk).body == "@gpt hello?"
    assert outbox.frames[-1][1]["message"]["status"] == "failed"
