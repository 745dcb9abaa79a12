"""The room socket and issue 9: private rooms, per-frame permission, delete frames."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from messages_app import services
from messages_app.models import Membership, Message, Room, Status, User
from tests.messages_app.test_consumers import connect, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def opened(room: Room, user: User) -> WebsocketCommunicator:
    communicator = await connect(room, user)
    assert (await communicator.connect())[0]
    assert (await receive(communicator))["type"] == "snapshot"
    return communicator


async def until_type(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``, skipping others (members frames, say)."""
    while True:
        frame = await receive(communicator)
        if frame["type"] == kind:
            return frame


@pytest.fixture
async def private(alice: User) -> Room:
    return await sync_to_async(services.room_create)(
        name="Secret", created_by=alice, visibility="private"
    )


async def test_consumer_refuses_a_private_room_to_a_non_member_with_4404(
    private: Room, bob: User
) -> None:
    communicator = await connect(private, bob)
    connected, _ = await communicator.connect()
    # Accepted, then closed, so that a browser sees the code (daphne hides a refusal).
    assert connected
    assert (await communicator.receive_output(timeout=5)) == {
        "type": "websocket.close",
        "code": 4404,
    }
    assert not await sync_to_async(Membership.objects.filter(user=bob).exists)()


async def test_consumer_opening_a_public_room_makes_a_member(room: Room, bob: User) -> None:
    communicator = await opened(room, bob)
    assert await sync_to_async(
        Membership.objects.filter(room=room, user=bob, role="member").exists
    )()
    await communicator.disconnect()


async def test_consumer_removal_closes_the_removed_members_socket_with_4403(
    private: Room, alice: User, bob: User
) -> None:
    await sync_to_async(services.membership_add)(room=private, user=bob)
    watcher = await opened(private, alice)
    communicator = await opened(private, bob)
    await sync_to_async(services.membership_remove)(room=private, user_id=bob.pk, actor=alice)
    while True:
        output = await communicator.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            break
    assert output["code"] == 4403
    # The owner's socket stays, and hears the new member list.
    frame = await until_type(watcher, "members")
    assert [m["name"] for m in frame["members"]] == ["Alice"]
    await watcher.disconnect()


@pytest.fixture
def missed_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the close command never reached this process: the frame check must hold."""
    monkeypatch.setattr(services.events, "user_sockets_close", lambda **kwargs: None)


@pytest.mark.usefixtures("missed_close")
async def test_consumer_refuses_posts_after_removal_on_the_same_socket(
    private: Room, alice: User, bob: User
) -> None:
    await sync_to_async(services.membership_add)(room=private, user=bob)
    communicator = await opened(private, bob)
    await sync_to_async(services.membership_remove)(room=private, user_id=bob.pk, actor=alice)
    await communicator.send_json_to({"type": "post", "body": "still here?", "client_id": None})
    error = await until_type(communicator, "error")
    assert error["code"] == "not_member"
    assert "not a member" in error["detail"]
    assert not await sync_to_async(Message.objects.filter(body="still here?").exists)()
    await communicator.disconnect()


@pytest.mark.usefixtures("missed_close")
async def test_consumer_refuses_cancel_and_delete_after_leaving(
    room: Room, alice: User, bob: User
) -> None:
    communicator = await opened(room, bob)
    asked = await sync_to_async(services.message_post)(room=room, author=bob, body="@gpt hey")
    await sync_to_async(services.membership_leave)(room=room, user=bob)
    assert asked.reply is not None
    for frame in (
        {"type": "cancel", "id": asked.reply.pk},
        {"type": "delete", "id": asked.message.pk},
    ):
        await communicator.send_json_to(frame)
        assert (await until_type(communicator, "error"))["code"] == "not_member"
    message = await sync_to_async(Message.objects.get)(pk=asked.message.pk)
    reply = await sync_to_async(Message.objects.get)(pk=asked.reply.pk)
    assert (message.body, reply.status) == ("@gpt hey", Status.PENDING)
    await communicator.disconnect()


async def test_consumer_cancel_of_someone_elses_reply_is_forbidden(
    room: Room, alice: User, bob: User
) -> None:
    asked = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt q")
    assert asked.reply is not None
    communicator = await opened(room, bob)
    await communicator.send_json_to({"type": "cancel", "id": asked.reply.pk})
    assert (await until_type(communicator, "error"))["code"] == "forbidden"
    assert (await sync_to_async(Message.objects.get)(pk=asked.reply.pk)).status == "pending"
    await communicator.disconnect()


async def test_consumer_delete_frame_tombstones_for_every_socket(
    room: Room, alice: User, bob: User
) -> None:
    watcher = await opened(room, bob)
    author = await opened(room, alice)
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="regret")
    await author.send_json_to({"type": "delete", "id": posted.message.pk})
    for communicator in (author, watcher):
        while True:
            frame = await until_type(communicator, "message")
            if frame["message"]["deleted"]:
                break
        assert frame["message"]["id"] == posted.message.pk
        assert frame["message"]["body"] == ""
        assert frame["message"]["version"] == posted.message.version + 1
    assert (await sync_to_async(Message.objects.get)(pk=posted.message.pk)).body == ""
    await author.disconnect()
    await watcher.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "delete"}, "invalid_id"),
        ({"type": "delete", "id": "7"}, "invalid_id"),
        ({"type": "delete", "id": 999999}, "not_found"),
    ],
)
async def test_consumer_answers_bad_delete_frames_with_an_error(
    room: Room, alice: User, frame: dict[str, Any], code: str
) -> None:
    communicator = await opened(room, alice)
    await communicator.send_json_to(frame)
    assert (await until_type(communicator, "error"))["code"] == code
    await communicator.disconnect()


async def test_consumer_answers_a_client_id_reused_in_another_room(room: Room, alice: User) -> None:
    other = await sync_to_async(services.room_create)(name="Other", created_by=alice)
    client_id = str(uuid.uuid4())
    await sync_to_async(services.message_post)(
        room=other, author=alice, body="there", client_id=client_id
    )
    communicator = await opened(room, alice)
    await communicator.send_json_to({"type": "post", "body": "here", "client_id": client_id})
    error = await until_type(communicator, "error")
    assert error["code"] == "client_id_reused"
    assert await sync_to_async(Message.objects.count)() == 1
    await communicator.disconnect()


async def test_consumer_answers_a_lone_surrogate_body_with_a_clear_error(
    room: Room, alice: User
) -> None:
    communicator = await opened(room, alice)
    await communicator.send_to(
        text_data='{"type": "post", "body": "hi \\ud800", "client_id": null}'
    )
    error = await until_type(communicator, "error")
    assert error["code"] == "invalid_text"
    assert "surrogate" in error["detail"]
    assert await sync_to_async(Message.objects.count)() == 0
    await communicator.disconnect()
