"""Regenerate (issue 13, point 3): the service, its revisions and limits, the socket's
``retry`` frame and its refusals, the revisions endpoint, the admin."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from messages_app import services
from messages_app.models import (
    MemberRole,
    Membership,
    Message,
    ReplyRevision,
    Role,
    Room,
    Status,
    User,
)
from messages_app.protocol import ClientError
from messages_app.selectors import message_get, message_payload
from tests.messages_app.test_room_consumer import opened, until_type

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def answered(
    room: Room,
    asker: User,
    text: str = "First answer.",
    *,
    status: str = Status.DONE,
    usage: dict[str, int] | None = None,
) -> Message:
    """A reply to ``asker``'s question that streamed ``text`` and ended ``status``."""
    reply = services.message_post(room=room, author=asker, body="@gpt tell me").reply
    assert reply is not None
    attempt = services.reply_claim(message_id=reply.pk, model="model-a")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text=text)
    if status == Status.DONE:
        services.reply_finish(
            message_id=reply.pk, attempt=attempt, model="model-a", usage=usage or USAGE
        )
    elif status == Status.FAILED:
        services.reply_fail(message_id=reply.pk, attempt=attempt, error="The model broke.")
    elif status == Status.CANCELLED:
        services.reply_cancel(room=room, message_id=reply.pk)
    return message_get(message_id=reply.pk)


def state() -> tuple[list[tuple[Any, ...]], int]:
    """What the database holds of every message, and how many revisions."""
    rows = list(
        Message.objects.order_by("pk").values_list(
            "pk", "status", "version", "body", "revision_count", "total_tokens", "requested_at"
        )
    )
    return rows, ReplyRevision.objects.count()


def finish_again(reply: Message, text: str, usage: dict[str, int]) -> None:
    attempt = services.reply_claim(message_id=reply.pk, model="model-b")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text=text)
    services.reply_finish(message_id=reply.pk, attempt=attempt, model="model-b", usage=usage)


@pytest.fixture
def bob_member(room: Room, bob: User) -> User:
    Membership.objects.create(room=room, user=bob, role=MemberRole.MEMBER)
    return bob


# --- the service ----------------------------------------------------------------------


@pytest.mark.django_db
def test_reply_regenerate_keeps_the_attempt_as_a_revision_and_requeues_the_same_row(
    room: Room, alice: User, queued_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    reply = answered(room, alice, "First answer.")
    queued_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        regenerated = services.reply_regenerate(message_id=reply.pk, actor=alice, room=room)
    assert regenerated.pk == reply.pk
    row = Message.objects.get(pk=reply.pk)
    assert (row.status, row.body, row.text_length, row.model, row.total_tokens, row.error) == (
        Status.PENDING,
        "",
        0,
        "",
        None,
        "",
    )
    assert (row.revision_count, row.version) == (1, reply.version + 1)
    assert row.attempt is None and row.finished_at is None and row.requested_at is not None
    assert not row.chunks.exists()
    (revision,) = ReplyRevision.objects.filter(message=reply)
    assert (revision.number, revision.text, revision.status, revision.model) == (
        1,
        "First answer.",
        Status.DONE,
        "model-a",
    )
    assert (revision.prompt_tokens, revision.completion_tokens, revision.total_tokens) == (
        12,
        5,
        17,
    )
    assert revision.requested_at == reply.created_at
    assert revision.finished_at == reply.finished_at
    assert revision.replaced_by == alice
    assert queued_tasks == [("worker.tasks.stream_reply", [reply.pk])]
    payload = message_payload(message_get(message_id=reply.pk))
    assert (payload["revisions"], payload["status"], payload["body"]) == (1, "pending", "")


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED])
def test_reply_regenerate_takes_failed_and_cancelled_replies_with_their_text(
    room: Room, alice: User, status: str
) -> None:
    reply = answered(room, alice, "Half an ans", status=status)
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    (revision,) = ReplyRevision.objects.filter(message=reply)
    assert (revision.status, revision.text) == (status, "Half an ans")
    assert revision.error == ("The model broke." if status == Status.FAILED else "")
    assert Message.objects.get(pk=reply.pk).status == Status.PENDING


@pytest.mark.django_db
def test_reply_regenerate_numbers_each_attempt_in_order(room: Room, alice: User) -> None:
    reply = answered(room, alice, "one")
    for n, text in enumerate(("two", "three"), start=1):
        services.reply_regenerate(message_id=reply.pk, actor=alice)
        finish_again(
            reply, text, {"prompt_tokens": n, "completion_tokens": n, "total_tokens": 2 * n}
        )
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    assert list(
        ReplyRevision.objects.filter(message=reply).values_list("number", "text", "total_tokens")
    ) == [(1, "one", 17), (2, "two", 2), (3, "three", 4)]
    assert Message.objects.get(pk=reply.pk).revision_count == 3


@pytest.mark.django_db
def test_reply_regenerate_past_the_revision_limit_is_refused_and_changes_nothing(
    room: Room, alice: User, settings: Any, queued_tasks: list[Any]
) -> None:
    settings.GPT_MAX_REVISIONS = 2
    reply = answered(room, alice, "one")
    for text in ("two", "three"):
        services.reply_regenerate(message_id=reply.pk, actor=alice)
        finish_again(reply, text, USAGE)
    before = state()
    queued_tasks.clear()
    with pytest.raises(ClientError) as caught:
        services.reply_regenerate(message_id=reply.pk, actor=alice)
    assert caught.value.code == "too_many_revisions"
    assert "GPT_MAX_REVISIONS=2" in caught.value.detail
    assert state() == before
    assert Message.objects.get(pk=reply.pk).body == "three"
    assert queued_tasks == []


@pytest.mark.django_db
def test_reply_regenerate_counts_against_the_askers_open_replies(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 1
    reply = answered(room, alice)
    services.message_post(room=room, author=alice, body="@gpt another")  # open now
    before = state()
    with pytest.raises(ClientError) as caught:
        services.reply_regenerate(message_id=reply.pk, actor=alice)
    assert caught.value.code == "rate_limited"
    assert state() == before


@pytest.mark.django_db
def test_reply_regenerate_counts_in_the_askers_replies_per_minute(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_REPLIES_PER_MINUTE = 3
    reply = answered(room, alice)  # 1 request
    services.reply_regenerate(message_id=reply.pk, actor=alice)  # 2
    finish_again(reply, "again", USAGE)
    services.reply_regenerate(message_id=reply.pk, actor=alice)  # 3
    finish_again(reply, "and again", USAGE)
    before = state()
    with pytest.raises(ClientError) as caught:
        services.reply_regenerate(message_id=reply.pk, actor=alice)
    assert caught.value.code == "rate_limited" and caught.value.retry_after
    assert state() == before
    # A new post is refused the same way: the regenerates counted as requests.
    with pytest.raises(ClientError, match="At most 3 @gpt requests a minute"):
        services.message_post(room=room, author=alice, body="@gpt more")


@pytest.mark.django_db
def test_reply_regenerate_counts_every_attempts_tokens_in_the_daily_budget(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 30
    reply = answered(
        room, alice, usage={"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
    )
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    finish_again(reply, "again", {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    # 20 (the revision) + 10 (the current attempt) = 30: the budget is used.
    before = state()
    with pytest.raises(ClientError, match=r"budget of 30 tokens .*\(30 used\)"):
        services.reply_regenerate(message_id=reply.pk, actor=alice)
    assert state() == before


@pytest.mark.django_db
def test_reply_regenerate_by_a_moderator_names_the_askers_limits(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 10
    Membership.objects.create(room=room, user=bob, role=MemberRole.MODERATOR)
    reply = answered(room, alice)  # 17 tokens
    with pytest.raises(ClientError) as caught:
        services.reply_regenerate(message_id=reply.pk, actor=bob)
    assert caught.value.code == "rate_limited"
    assert caught.value.detail.startswith("The reply is counted against Alice's @gpt limits:")


@pytest.mark.django_db
def test_reply_regenerate_an_attempt_is_counted_when_it_was_asked_for(
    room: Room, alice: User, settings: Any
) -> None:
    """An old reply regenerated today counts today; its first attempt stays in the past."""
    settings.GPT_DAILY_TOKENS_PER_USER = 20
    reply = answered(room, alice)  # 17 tokens
    Message.objects.filter(pk=reply.pk).update(created_at=timezone.now() - timedelta(days=2))
    services.reply_regenerate(message_id=reply.pk, actor=alice)  # allowed: 17 left the window
    finish_again(reply, "again", {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    assert ReplyRevision.objects.get(message=reply).requested_at < timezone.now() - timedelta(
        days=1
    )
    services.reply_regenerate(message_id=reply.pk, actor=alice)  # 2 used in 24 h
    assert Message.objects.get(pk=reply.pk).revision_count == 2


@pytest.mark.django_db
def test_message_delete_empties_the_revisions_text_and_keeps_their_usage(
    room: Room, alice: User
) -> None:
    reply = answered(room, alice, "secret")
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    finish_again(reply, "also secret", USAGE)
    services.message_delete(message_id=reply.pk, actor=alice)
    (revision,) = ReplyRevision.objects.filter(message=reply)
    assert (revision.text, revision.total_tokens) == ("", 17)
    with pytest.raises(ClientError) as caught:
        services.reply_regenerate(message_id=reply.pk, actor=alice)
    assert caught.value.code == "already_deleted"


# --- the socket's retry frame --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_consumer_retry_by_the_asker_regenerates_for_every_socket(
    room: Room, alice: User, bob_member: User, queued_tasks: list[Any]
) -> None:
    reply = await sync_to_async(answered)(room, alice, "First answer.")
    asker = await opened(room, alice)
    watcher = await opened(room, bob_member)
    queued_tasks.clear()
    await asker.send_json_to({"type": "retry", "id": reply.pk})
    for socket in (asker, watcher):
        frame = await until_type(socket, "message")
        sent = frame["message"]
        assert (sent["id"], sent["status"], sent["body"], sent["revisions"]) == (
            reply.pk,
            "pending",
            "",
            1,
        )
        assert sent["version"] == reply.version + 1
    revision = await sync_to_async(ReplyRevision.objects.get)(message_id=reply.pk)
    assert revision.text == "First answer."
    assert queued_tasks == [("worker.tasks.stream_reply", [reply.pk])]
    await asker.disconnect()
    await watcher.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", [MemberRole.MODERATOR, MemberRole.OWNER])
async def test_consumer_retry_by_a_moderator_or_owner_of_the_room(
    room: Room, alice: User, bob: User, role: str, queued_tasks: list[Any]
) -> None:
    await sync_to_async(Membership.objects.create)(room=room, user=bob, role=role)
    reply = await sync_to_async(answered)(room, alice, "First answer.", status=Status.FAILED)
    socket = await opened(room, bob)
    await socket.send_json_to({"type": "retry", "id": reply.pk})
    frame = await until_type(socket, "message")
    assert (frame["message"]["id"], frame["message"]["status"]) == (reply.pk, "pending")
    revision = await sync_to_async(ReplyRevision.objects.get)(message_id=reply.pk)
    assert (revision.status, revision.replaced_by_id) == (Status.FAILED, bob.pk)
    await socket.disconnect()


def _bad_cases(room: Room, alice: User, bob: User) -> dict[str, tuple[dict[str, Any], str]]:
    """Each refused retry: its frame and the code it is answered with."""
    other = Room.objects.create(name="Other", slug="other")
    Membership.objects.create(room=other, user=alice, role=MemberRole.OWNER)
    foreign = answered(other, alice, "elsewhere")
    streaming = services.message_post(room=room, author=alice, body="@gpt go on").reply
    assert streaming is not None
    services.reply_claim(message_id=streaming.pk, model="m")
    pending = services.message_post(room=room, author=alice, body="@gpt wait").reply
    assert pending is not None
    question = Message.objects.filter(room=room, role=Role.USER).first()
    assert question is not None
    deleted = answered(room, alice, "to go")
    services.message_delete(message_id=deleted.pk, actor=alice)
    mine = answered(room, alice, "alice's")
    return {
        "streaming": ({"type": "retry", "id": streaming.pk}, "not_retryable"),
        "pending": ({"type": "retry", "id": pending.pk}, "not_retryable"),
        "user message": ({"type": "retry", "id": question.pk}, "not_a_reply"),
        "other room": ({"type": "retry", "id": foreign.pk}, "not_found"),
        "unknown id": ({"type": "retry", "id": 987654321}, "not_found"),
        "deleted": ({"type": "retry", "id": deleted.pk}, "already_deleted"),
        "not allowed": ({"type": "retry", "id": mine.pk}, "forbidden"),
        "no id": ({"type": "retry"}, "invalid_id"),
        "text id": ({"type": "retry", "id": str(mine.pk)}, "invalid_id"),
        "true id": ({"type": "retry", "id": True}, "invalid_id"),
    }


@pytest.mark.django_db(transaction=True)
async def test_consumer_refuses_each_bad_retry_with_its_code_and_changes_nothing(
    room: Room, alice: User, bob_member: User, queued_tasks: list[Any]
) -> None:
    cases = await sync_to_async(_bad_cases)(room, alice, bob_member)
    before = await sync_to_async(state)()
    queued_tasks.clear()
    socket = await opened(room, bob_member)  # a plain member: not the asker of any
    alice_socket = await opened(room, alice)
    for name, (frame, code) in cases.items():
        # "not allowed" is bob's; the rest are alice's own (she may retry hers).
        sender = socket if name == "not allowed" else alice_socket
        await sender.send_json_to(frame)
        answer = await until_type(sender, "error")
        assert answer["code"] == code, (name, answer)
    assert await sync_to_async(state)() == before
    assert queued_tasks == []
    await socket.disconnect()
    await alice_socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_consumer_refuses_a_retry_after_leaving_the_room(
    room: Room, alice: User, bob_member: User
) -> None:
    reply = await sync_to_async(answered)(room, alice)
    socket = await opened(room, alice)
    # Gone from the room while the socket stays open (its close may not arrive).
    await sync_to_async(Membership.objects.filter(room=room, user=alice).delete)()
    before = await sync_to_async(state)()
    await socket.send_json_to({"type": "retry", "id": reply.pk})
    assert (await until_type(socket, "error"))["code"] == "not_member"
    assert await sync_to_async(state)() == before
    await socket.disconnect()


# --- the revisions endpoint -----------------------------------------------------------


@pytest.mark.django_db
def test_revisions_endpoint_gives_members_the_earlier_attempts(
    client: Client, room: Room, alice: User, bob_member: User
) -> None:
    reply = answered(room, alice, "one")
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    finish_again(reply, "two", USAGE)
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    client.force_login(bob_member)
    response = client.get(reverse("message_revisions", args=[room.slug, reply.pk]))
    assert response.status_code == 200
    data = response.json()
    assert (data["id"], data["current"]) == (reply.pk, 3)
    assert [(r["number"], r["body"], r["status"], r["model"]) for r in data["revisions"]] == [
        (1, "one", "done", "model-a"),
        (2, "two", "done", "model-b"),
    ]
    assert data["revisions"][0]["usage"] == USAGE
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_revisions_endpoint_refuses_non_members_and_wrong_ids(
    client: Client, alice: User, bob: User
) -> None:
    private = services.room_create(name="Secret", created_by=alice, visibility="private")
    other = services.room_create(name="Other", created_by=alice)
    reply = answered(private, alice, "hidden")
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    client.force_login(bob)
    url = reverse("message_revisions", args=[private.slug, reply.pk])
    assert client.get(url).status_code == 404  # a private room is not found for others
    client.force_login(alice)
    for slug, message_id in [
        (other.slug, reply.pk),  # the message is in another room
        (private.slug, 987654321),
        (private.slug, 99999999999999999999),  # more than any id
        ("no-such-room", reply.pk),
    ]:
        response = client.get(reverse("message_revisions", args=[slug, message_id]))
        assert response.status_code == 404, (slug, message_id)
    assert client.post(url).status_code == 405
    client.logout()
    assert client.get(url).status_code == 302  # to the login page


@pytest.mark.django_db
def test_revisions_endpoint_of_a_deleted_reply_has_no_text(
    client: Client, room: Room, alice: User
) -> None:
    reply = answered(room, alice, "gone")
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    services.message_delete(message_id=reply.pk, actor=alice)
    client.force_login(alice)
    data = client.get(reverse("message_revisions", args=[room.slug, reply.pk])).json()
    assert [(r["number"], r["body"]) for r in data["revisions"]] == [(1, "")]


# --- the admin -------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_message_page_shows_the_revisions_inline(
    admin_client: Client, room: Room, alice: User
) -> None:
    reply = answered(room, alice, "The first <b>try</b>")
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    page = admin_client.get(reverse("admin:messages_app_message_change", args=[reply.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "The first &lt;b&gt;try&lt;/b&gt;" in html
    assert "17 (12+5)" in html
    assert "model-a" in html


@pytest.mark.django_db
def test_admin_regenerate_action_keeps_a_revision_of_a_done_reply(
    admin_client: Client,
    room: Room,
    alice: User,
    queued_tasks: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    reply = answered(room, alice, "done once")
    queued_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:messages_app_message_changelist"),
            {"action": "retry_failed_replies", "_selected_action": [reply.pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert Message.objects.get(pk=reply.pk).status == Status.PENDING
    assert ReplyRevision.objects.get(message=reply).text == "done once"
    assert queued_tasks == [("worker.tasks.stream_reply", [reply.pk])]
