"""The history and edit frames on the real consumer and routing (issue 14), bad cases too."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from messages_app import services
from messages_app.models import MemberRole, Membership, Message, Role, Room, Status, User
from tests.messages_app.test_consumers import connect, receive, settled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _rare_heartbeats(settings: Any) -> None:
    settings.CHAT_RECONCILE_SECONDS = 300.0


async def opened(room: Room, user: User) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator = await connect(room, user)
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await receive(communicator)
    assert snapshot["type"] == "snapshot"
    await settled(communicator)  # its own presence list: nothing else comes unasked
    return communicator, snapshot


@sync_to_async
def fill(room: Room, author: User, count: int) -> list[int]:
    Message.objects.bulk_create(
        Message(room=room, author=author, body=f"message {n}", text_length=len(f"message {n}"))
        for n in range(count)
    )
    return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))


@sync_to_async
def rows_state() -> list[tuple[Any, ...]]:
    """Everything a refused frame must leave as it was."""
    return list(
        Message.objects.order_by("id").values_list(
            "id", "room_id", "body", "version", "status", "edited_at", "deleted_at"
        )
    )


@sync_to_async
def member(room: Room, user: User) -> None:
    Membership.objects.create(room=room, user=user, role=MemberRole.MEMBER)


# --- history ------------------------------------------------------------------------


async def test_consumer_snapshot_says_whether_older_messages_exist(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 10
    ids = await fill(room, alice, 25)
    socket, snapshot = await opened(room, alice)
    assert [m["id"] for m in snapshot["messages"]] == ids[-10:]
    assert snapshot["has_more"] is True
    await socket.disconnect()


async def test_consumer_history_pages_back_to_the_first_message(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 10
    ids = await fill(room, alice, 25)
    socket, snapshot = await opened(room, alice)
    seen = [m["id"] for m in snapshot["messages"]]
    await socket.send_json_to({"type": "history", "before": seen[0], "limit": 10})
    page = await receive(socket)
    assert page["type"] == "history"
    assert [m["id"] for m in page["messages"]] == ids[5:15]
    assert (page["has_more"], page["has_newer"]) == (True, True)
    await socket.send_json_to({"type": "history", "before": ids[5], "limit": 10})
    page = await receive(socket)
    assert [m["id"] for m in page["messages"]] == ids[:5]
    assert page["has_more"] is False
    assert page["messages"][0]["body"] == "message 0"
    assert set(page["messages"][0]) >= {"id", "body", "version", "edited_at", "deleted"}
    await socket.disconnect()


async def test_consumer_history_is_answered_to_the_asking_socket_only(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 2
    await member(room, bob)
    ids = await fill(room, alice, 5)
    asking, _ = await opened(room, alice)
    watching, _ = await opened(room, bob)
    await asking.send_json_to({"type": "history", "around": ids[1], "limit": 3})
    page = await receive(asking)
    assert [m["id"] for m in page["messages"]] == ids[:3]
    assert (page["has_more"], page["has_newer"]) == (False, True)
    assert await watching.receive_nothing(timeout=0.3)
    await asking.disconnect()
    await watching.disconnect()


async def test_consumer_history_rows_stay_live_a_streaming_reply_among_them_keeps_updating(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 3
    result = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt go")
    assert result.reply is not None
    reply_id = result.reply.pk
    attempt = await sync_to_async(services.reply_claim)(message_id=reply_id, model="m")
    await sync_to_async(services.reply_append)(message_id=reply_id, attempt=attempt, text="Hel")
    await fill(room, alice, 5)
    socket, snapshot = await opened(room, alice)
    assert reply_id not in {m["id"] for m in snapshot["messages"]}
    await socket.send_json_to(
        {"type": "history", "before": snapshot["messages"][0]["id"], "limit": 10}
    )
    page = await receive(socket)
    held = {m["id"]: m for m in page["messages"]}[reply_id]
    assert (held["body"], held["version"], held["status"]) == ("Hel", 3, "streaming")
    await sync_to_async(services.reply_append)(message_id=reply_id, attempt=attempt, text="lo")
    assert await receive(socket) == {
        "type": "delta",
        "id": reply_id,
        "version": 4,
        "offset": 3,
        "text": "lo",
    }
    await socket.disconnect()


async def test_consumer_history_a_deleted_anchor_is_a_place_in_the_timeline(
    room: Room, alice: User
) -> None:
    ids = await fill(room, alice, 4)
    await sync_to_async(services.message_delete)(message_id=ids[2], actor=alice, room=room)
    socket, _ = await opened(room, alice)
    await socket.send_json_to({"type": "history", "around": ids[2], "limit": 3})
    page = await receive(socket)
    assert [m["id"] for m in page["messages"]] == ids[1:4]
    assert page["messages"][1]["deleted"] is True
    await socket.disconnect()


HISTORY_BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "history"}, "invalid_history"),
    ({"type": "history", "limit": 10}, "invalid_history"),
    ({"type": "history", "before": 1, "after": 1}, "invalid_history"),
    ({"type": "history", "before": "12"}, "invalid_id"),
    ({"type": "history", "before": 12.5}, "invalid_id"),
    ({"type": "history", "before": True}, "invalid_id"),
    ({"type": "history", "before": -3}, "invalid_id"),
    ({"type": "history", "before": 0}, "invalid_id"),
    ({"type": "history", "before": None}, "invalid_id"),
    ({"type": "history", "around": [1]}, "invalid_id"),
    ({"type": "history", "before": "LAST", "limit": 10}, "invalid_id"),
    ({"type": "history", "before": "VALID", "limit": 0}, "invalid_limit"),
    ({"type": "history", "before": "VALID", "limit": -5}, "invalid_limit"),
    ({"type": "history", "before": "VALID", "limit": 101}, "invalid_limit"),
    ({"type": "history", "before": "VALID", "limit": "50"}, "invalid_limit"),
    ({"type": "history", "before": "VALID", "limit": 5.5}, "invalid_limit"),
    ({"type": "history", "before": "VALID", "limit": True}, "invalid_limit"),
    ({"type": "history", "before": "UNKNOWN"}, "not_found"),
    ({"type": "history", "around": "FOREIGN"}, "not_found"),
    ({"type": "history", "before": "FOREIGN"}, "not_found"),
    ({"type": "history", "after": "FOREIGN"}, "not_found"),
]


@pytest.mark.parametrize(("frame", "code"), HISTORY_BAD)
async def test_consumer_refuses_a_bad_history_frame_with_its_code(
    room: Room, alice: User, bob: User, settings: Any, frame: dict[str, Any], code: str
) -> None:
    settings.CHAT_HISTORY_MAX_LIMIT = 100
    ids = await fill(room, alice, 3)
    other = await sync_to_async(Room.objects.create)(name="Other", slug="other", created_by=bob)
    foreign = await fill(other, bob, 2)
    names = {"VALID": ids[-1], "UNKNOWN": foreign[-1] + 1000, "FOREIGN": foreign[0]}
    frame = {
        key: names.get(value, value)
        if isinstance(value, str) and key != "type" and key != "limit"
        else value
        for key, value in frame.items()
    }
    before = await rows_state()
    socket, _ = await opened(room, alice)
    await socket.send_json_to(frame)
    error = await receive(socket)
    assert (error["type"], error["code"]) == ("error", code), error
    assert error["detail"]
    assert await rows_state() == before
    # The socket stays open and answers the next frame.
    await socket.send_json_to({"type": "history", "before": ids[-1]})
    assert (await receive(socket))["type"] == "history"
    await socket.disconnect()


async def test_consumer_refuses_history_past_the_rate_with_retry_after(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_HISTORY_PER_MINUTE = 3
    ids = await fill(room, alice, 5)
    socket, _ = await opened(room, alice)
    for _ in range(3):
        await socket.send_json_to({"type": "history", "before": ids[-1], "limit": 1})
        assert (await receive(socket))["type"] == "history"
    await socket.send_json_to({"type": "history", "before": ids[-1], "limit": 1})
    error = await receive(socket)
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    assert "at most 3 pages a minute" in error["detail"]
    assert 0 < error["retry_after"] <= 60
    await socket.disconnect()


async def test_consumer_refuses_history_to_a_member_removed_meanwhile(
    room: Room, alice: User, bob: User
) -> None:
    await member(room, bob)
    ids = await fill(room, alice, 3)
    socket, _ = await opened(room, bob)
    await sync_to_async(Membership.objects.filter(room=room, user=bob).delete)()
    await socket.send_json_to({"type": "history", "before": ids[-1]})
    frame = await receive(socket)
    assert (frame["type"], frame["code"]) == ("error", "not_member")
    await socket.disconnect()


# --- edit ---------------------------------------------------------------------------


async def test_consumer_edit_changes_the_text_for_every_socket_and_marks_it_edited(
    room: Room, alice: User, bob: User, queued_tasks: list[Any]
) -> None:
    await member(room, bob)
    question = await sync_to_async(services.message_post)(
        room=room, author=alice, body="@gpt what is 2+2?"
    )
    assert question.reply is not None
    later = await sync_to_async(services.message_post)(room=room, author=bob, body="after")
    queued_before = len(queued_tasks)
    author, _ = await opened(room, alice)
    watcher, _ = await opened(room, bob)
    await author.send_json_to(
        {"type": "edit", "id": question.message.pk, "body": "what is 3+3? @gpt"}
    )
    for socket in (author, watcher):
        frame = await receive(socket)
        assert frame["type"] == "message"
        edited = frame["message"]
        assert (edited["id"], edited["body"], edited["version"]) == (
            question.message.pk,
            "what is 3+3? @gpt",
            2,
        )
        assert edited["edited_at"] is not None
    row = await sync_to_async(Message.objects.get)(pk=question.message.pk)
    assert (row.body, row.version, row.edited_at is not None) == ("what is 3+3? @gpt", 2, True)
    # Its place in the timeline, its reply and the room's other rows stay as they were;
    # the mention added or kept by the edit asks nothing.
    ids = await sync_to_async(
        lambda: list(Message.objects.order_by("id").values_list("id", flat=True))
    )()
    assert ids == [question.message.pk, question.reply.pk, later.message.pk]
    reply = await sync_to_async(Message.objects.get)(pk=question.reply.pk)
    assert (reply.status, reply.version, reply.reply_to_id) == (
        Status.PENDING,
        1,
        question.message.pk,
    )
    assert len(queued_tasks) == queued_before
    assert await author.receive_nothing(timeout=0.3)
    await author.disconnect()
    await watcher.disconnect()


async def test_consumer_edit_to_the_same_text_changes_nothing(room: Room, alice: User) -> None:
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="same")
    socket, _ = await opened(room, alice)
    before = await rows_state()
    await socket.send_json_to({"type": "edit", "id": posted.message.pk, "body": "same"})
    assert await socket.receive_nothing(timeout=0.3)
    assert await rows_state() == before
    await socket.disconnect()


async def test_consumer_edit_cleans_the_body_as_a_post(room: Room, alice: User) -> None:
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="typo")
    socket, _ = await opened(room, alice)
    await socket.send_json_to(
        {"type": "edit", "id": posted.message.pk, "body": "fixed\r\nline\x00 two"}
    )
    frame = await receive(socket)
    assert frame["message"]["body"] == "fixed\nline two"
    await socket.disconnect()


EDIT_BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "edit", "body": "x"}, "invalid_id"),
    ({"type": "edit", "id": "MINE_STR", "body": "x"}, "invalid_id"),
    ({"type": "edit", "id": 1.5, "body": "x"}, "invalid_id"),
    ({"type": "edit", "id": True, "body": "x"}, "invalid_id"),
    ({"type": "edit", "id": -1, "body": "x"}, "invalid_id"),
    ({"type": "edit", "id": "MINE"}, "missing_body"),
    ({"type": "edit", "id": "MINE", "body": ""}, "empty_body"),
    ({"type": "edit", "id": "MINE", "body": " \n\t "}, "empty_body"),
    ({"type": "edit", "id": "MINE", "body": "TOO_LONG"}, "body_too_long"),
    ({"type": "edit", "id": "MINE", "body": 42}, "invalid_body"),
    ({"type": "edit", "id": "MINE", "body": None}, "invalid_body"),
    ({"type": "edit", "id": "MINE", "body": "broken \ud800 half"}, "invalid_text"),
    ({"type": "edit", "id": "THEIRS", "body": "hijack"}, "forbidden"),
    ({"type": "edit", "id": "REPLY", "body": "put words in its mouth"}, "not_editable"),
    ({"type": "edit", "id": "DELETED", "body": "bring it back"}, "already_deleted"),
    ({"type": "edit", "id": "FOREIGN", "body": "elsewhere"}, "not_found"),
    ({"type": "edit", "id": "UNKNOWN", "body": "nothing"}, "not_found"),
]


@pytest.mark.parametrize(("frame", "code"), EDIT_BAD)
async def test_consumer_refuses_a_bad_edit_with_its_code_and_changes_nothing(
    room: Room, alice: User, bob: User, settings: Any, frame: dict[str, Any], code: str
) -> None:
    settings.CHAT_MAX_BODY_LENGTH = 50
    await member(room, bob)
    mine = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt mine")
    assert mine.reply is not None
    theirs = await sync_to_async(services.message_post)(room=room, author=bob, body="theirs")
    deleted = await sync_to_async(services.message_post)(room=room, author=alice, body="gone")
    await sync_to_async(services.message_delete)(
        message_id=deleted.message.pk, actor=alice, room=room
    )
    other = await sync_to_async(Room.objects.create)(name="Other", slug="other", created_by=alice)
    await sync_to_async(Membership.objects.create)(room=other, user=alice, role=MemberRole.OWNER)
    foreign = await sync_to_async(services.message_post)(room=other, author=alice, body="there")
    names = {
        "MINE": mine.message.pk,
        "MINE_STR": str(mine.message.pk),
        "THEIRS": theirs.message.pk,
        "REPLY": mine.reply.pk,
        "DELETED": deleted.message.pk,
        "FOREIGN": foreign.message.pk,
        "UNKNOWN": foreign.message.pk + 1000,
        "TOO_LONG": "x" * 51,
    }
    frame = {
        k: names.get(v, v) if isinstance(v, str) and k != "type" else v for k, v in frame.items()
    }
    before = await rows_state()
    socket, _ = await opened(room, alice)
    await socket.send_json_to(frame)
    error = await receive(socket)
    assert (error["type"], error["code"]) == ("error", code), error
    assert error["detail"]
    assert await rows_state() == before
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()


async def test_consumer_refuses_an_edit_of_an_assistant_reply_even_to_staff(
    room: Room, alice: User, make_user: Any
) -> None:
    staff = await sync_to_async(make_user)("root")
    staff.is_staff = True
    await sync_to_async(staff.save)()
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt hi")
    assert posted.reply is not None
    socket, _ = await opened(room, staff)
    for target, code in ((posted.reply.pk, "not_editable"), (posted.message.pk, "forbidden")):
        await socket.send_json_to({"type": "edit", "id": target, "body": "x"})
        frame = await receive(socket)
        assert (frame["type"], frame["code"]) == ("error", code)
    row = await sync_to_async(Message.objects.get)(pk=posted.reply.pk)
    assert (row.role, row.version) == (Role.ASSISTANT, 1)
    await socket.disconnect()


async def test_consumer_refuses_edits_past_the_rate_and_changes_nothing(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_EDITS_PER_MINUTE = 2
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="v0")
    socket, _ = await opened(room, alice)
    for n in (1, 2):
        await socket.send_json_to({"type": "edit", "id": posted.message.pk, "body": f"v{n}"})
        assert (await receive(socket))["message"]["body"] == f"v{n}"
    await socket.send_json_to({"type": "edit", "id": posted.message.pk, "body": "v3"})
    error = await receive(socket)
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    assert "at most 2 edits a minute" in error["detail"]
    row = await sync_to_async(Message.objects.get)(pk=posted.message.pk)
    assert (row.body, row.version) == ("v2", 3)
    await socket.disconnect()


async def test_consumer_refuses_an_edit_by_an_author_removed_meanwhile(
    room: Room, alice: User, bob: User
) -> None:
    await member(room, bob)
    posted = await sync_to_async(services.message_post)(room=room, author=bob, body="mine")
    socket, _ = await opened(room, bob)
    await sync_to_async(Membership.objects.filter(room=room, user=bob).delete)()
    await socket.send_json_to({"type": "edit", "id": posted.message.pk, "body": "changed"})
    frame = await receive(socket)
    assert (frame["type"], frame["code"]) == ("error", "not_member")
    row = await sync_to_async(Message.objects.get)(pk=posted.message.pk)
    assert (row.body, row.edited_at) == ("mine", None)
    await socket.disconnect()
