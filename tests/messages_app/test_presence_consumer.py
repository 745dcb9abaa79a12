"""The room socket's presence, typing and read frames (issue 14 points 3-5, and their
bad cases: point 7), on the real routing, Redis and Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from messages_app import services
from messages_app.models import Membership, Message, Room, User
from tests.messages_app.test_consumers import close_of, connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _rare_heartbeats(settings: Any) -> None:
    settings.CHAT_RECONCILE_SECONDS = 300.0


async def frame_of(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``, past others (heartbeats, presence lists)."""
    while True:
        frame = await communicator.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return frame


async def presence_until(communicator: WebsocketCommunicator, names: list[str]) -> dict[str, Any]:
    while True:
        frame = await frame_of(communicator, "presence")
        if [u["name"] for u in frame["users"]] == names:
            return frame


async def opened(room: Room, user: User, *, names: list[str] | None = None) -> Any:
    """A socket past its snapshot, once its presence list holds ``names`` (default: its own)."""
    communicator = await connect(room, user)
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"
    await presence_until(communicator, names or [user.get_display_name()])
    return communicator


async def member_of(room: Room, user: User) -> Membership:
    return await sync_to_async(Membership.objects.get)(room=room, user=user)


# --- presence ------------------------------------------------------------------------------


async def test_presence_a_socket_sees_itself_then_others_come_and_go(
    room: Room, alice: User, bob: User
) -> None:
    mine = await opened(room, alice)
    theirs = await opened(room, bob, names=["Alice", "Bob"])
    frame = await presence_until(mine, ["Alice", "Bob"])
    assert frame == {
        "type": "presence",
        "users": [{"user_id": alice.pk, "name": "Alice"}, {"user_id": bob.pk, "name": "Bob"}],
        "count": 2,
    }
    await theirs.disconnect()
    assert (await presence_until(mine, ["Alice"]))["count"] == 1
    await mine.disconnect()


async def test_presence_a_user_with_two_tabs_counts_once_until_the_last_closes(
    room: Room, alice: User, bob: User
) -> None:
    watcher = await opened(room, alice)
    first = await opened(room, bob, names=["Alice", "Bob"])
    assert (await presence_until(watcher, ["Alice", "Bob"]))["count"] == 2
    # Bob's second tab gets the list; the room's list did not change, so nobody
    # else is told again
    second = await opened(room, bob, names=["Alice", "Bob"])
    await first.disconnect()
    # one of Bob's tabs is still open: still listed, once; the next list Alice
    # hears is the one after his last tab closed
    await second.disconnect()
    frame = await frame_of(watcher, "presence")
    assert (frame["users"], frame["count"]) == ([{"user_id": alice.pk, "name": "Alice"}], 1)
    await watcher.disconnect()


async def test_presence_list_is_cut_at_the_setting_and_counts_everyone(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.CHAT_PRESENCE_MAX_USERS = 1
    mine = await opened(room, alice)
    theirs = await connect(room, bob)
    assert (await theirs.connect())[0]
    frame = await frame_of(mine, "presence")
    while frame["count"] != 2:
        frame = await frame_of(mine, "presence")
    assert frame["users"] == [{"user_id": alice.pk, "name": "Alice"}]
    await theirs.disconnect()
    await mine.disconnect()


# --- typing ----------------------------------------------------------------------------------


async def test_typing_reaches_the_other_users_sockets_not_the_typists(
    room: Room, alice: User, bob: User
) -> None:
    typist = await opened(room, alice)
    other_tab = await opened(room, alice)
    reader = await opened(room, bob, names=["Alice", "Bob"])
    await typist.send_json_to({"type": "typing"})
    assert await frame_of(reader, "typing") == {
        "type": "typing",
        "user_id": alice.pk,
        "name": "Alice",
    }
    # Bob types next; once Alice's sockets hear him, hers would have come before
    await reader.send_json_to({"type": "typing"})
    for communicator in (typist, other_tab):
        assert (await frame_of(communicator, "typing"))["user_id"] == bob.pk
    for communicator in (typist, other_tab, reader):
        await communicator.disconnect()
    assert await sync_to_async(Message.objects.count)() == 0  # never stored


async def test_typing_faster_than_the_interval_is_dropped_silently(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.CHAT_TYPING_INTERVAL_SECONDS = 60.0
    typist = await opened(room, alice)
    reader = await opened(room, bob, names=["Alice", "Bob"])
    await typist.send_json_to({"type": "typing"})
    await typist.send_json_to({"type": "typing"})  # too soon: dropped, no error
    await reader.send_json_to({"type": "typing"})  # a marker after both
    assert (await frame_of(typist, "typing"))["user_id"] == bob.pk  # and no error before it
    assert (await frame_of(reader, "typing"))["user_id"] == alice.pk
    await typist.send_json_to({"type": "read", "id": "x"})  # a marker: the next frame Bob ...
    assert (await frame_of(typist, "error"))["code"] == "invalid_id"
    await reader.send_json_to({"type": "post", "body": "after", "client_id": None})
    # ... hears after Alice's typing is Bob's own post: her second typing never came
    assert (await frame_of(reader, "message"))["message"]["body"] == "after"
    await typist.disconnect()
    await reader.disconnect()


async def test_typing_by_someone_no_longer_a_member_is_refused(
    room: Room, alice: User, bob: User
) -> None:
    reader = await opened(room, alice)
    typist = await opened(room, bob, names=["Alice", "Bob"])
    # Bob's membership goes behind his socket's back (not through the service,
    # which would close the socket)
    await sync_to_async(Membership.objects.filter(room=room, user=bob).delete)()
    await typist.send_json_to({"type": "typing"})
    assert (await frame_of(typist, "error"))["code"] == "not_member"
    await typist.send_json_to({"type": "read", "id": 1})
    assert (await frame_of(typist, "error"))["code"] == "not_member"
    await reader.send_json_to({"type": "typing"})
    assert (await frame_of(typist, "typing"))["user_id"] == alice.pk  # hers, not his own
    await typist.disconnect()
    await reader.disconnect()


# --- read ------------------------------------------------------------------------------------


async def test_read_moves_the_position_forward_only(room: Room, alice: User, bob: User) -> None:
    posts = [
        await sync_to_async(services.message_post)(room=room, author=bob, body=f"m{n}")
        for n in range(3)
    ]
    first, _, last = (p.message.pk for p in posts)
    socket = await opened(room, alice)
    await socket.send_json_to({"type": "read", "id": last})
    await socket.send_json_to({"type": "read", "id": first})  # back: ignored, no error
    await socket.send_json_to({"type": "read", "id": "marker"})
    assert (await frame_of(socket, "error"))["code"] == "invalid_id"  # nothing before it
    assert (await member_of(room, alice)).last_read_id == last
    await socket.disconnect()


async def test_read_of_a_deleted_message_counts(room: Room, alice: User, bob: User) -> None:
    posted = await sync_to_async(services.message_post)(room=room, author=bob, body="gone")
    await sync_to_async(services.message_delete)(
        room=room, message_id=posted.message.pk, actor=alice
    )
    socket = await opened(room, alice)
    await socket.send_json_to({"type": "read", "id": posted.message.pk})
    await socket.send_json_to({"type": "read", "id": None})
    assert (await frame_of(socket, "error"))["code"] == "invalid_id"
    assert (await member_of(room, alice)).last_read_id == posted.message.pk
    await socket.disconnect()


@pytest.mark.parametrize(
    "frame,code",
    [
        ({"type": "read"}, "invalid_id"),
        ({"type": "read", "id": "7"}, "invalid_id"),
        ({"type": "read", "id": 7.5}, "invalid_id"),
        ({"type": "read", "id": True}, "invalid_id"),
        ({"type": "read", "id": [7]}, "invalid_id"),
        ({"type": "read", "id": 10**12}, "not_found"),
        ({"type": "read", "id": -1}, "not_found"),
        ({"type": "read", "id": 1, "room": "other"}, "unknown_field"),
        ({"type": "typing", "body": "secret draft"}, "unknown_field"),
    ],
)
async def test_read_and_typing_bad_frames_are_refused_and_change_nothing(
    room: Room, alice: User, bob: User, frame: dict[str, Any], code: str
) -> None:
    await sync_to_async(services.message_post)(room=room, author=bob, body="hello")
    reader = await opened(room, bob)
    socket = await opened(room, alice, names=["Alice", "Bob"])
    await socket.send_json_to(frame)
    error = await frame_of(socket, "error")
    assert error["code"] == code and error["detail"]
    assert (await member_of(room, alice)).last_read_id == 0
    # no typing frame went out either: Bob's next frame is his own post's
    await socket.send_json_to({"type": "post", "body": "marker", "client_id": None})
    next_frame = await reader.receive_json_from(timeout=5)
    while next_frame["type"] == "presence":
        next_frame = await reader.receive_json_from(timeout=5)
    assert next_frame["type"] == "message"
    await socket.disconnect()
    await reader.disconnect()


async def test_read_of_another_rooms_message_is_not_found_and_changes_nothing(
    room: Room, alice: User
) -> None:
    other = await sync_to_async(services.room_create)(name="Other", created_by=alice)
    posted = await sync_to_async(services.message_post)(room=other, author=alice, body="there")
    socket = await opened(room, alice)
    await socket.send_json_to({"type": "read", "id": posted.message.pk})
    assert (await frame_of(socket, "error"))["code"] == "not_found"
    assert (await member_of(room, alice)).last_read_id == 0
    assert (await member_of(other, alice)).last_read_id == 0
    await socket.disconnect()


async def test_presence_leaves_when_the_hub_closes_a_socket(
    room: Room, alice: User, bob: User
) -> None:
    from messages_app import events

    watcher = await opened(room, alice)
    closed = await opened(room, bob, names=["Alice", "Bob"])
    await presence_until(watcher, ["Alice", "Bob"])
    await sync_to_async(events.user_sockets_close)(user_id=bob.pk, code=4401)
    assert (await close_of(closed))["code"] == 4401
    await closed.wait(timeout=5)
    await presence_until(watcher, ["Alice"])
    await watcher.disconnect()


async def test_typing_after_sending_a_message_passes_at_once(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.CHAT_TYPING_INTERVAL_SECONDS = 60.0
    typist = await opened(room, alice)
    reader = await opened(room, bob, names=["Alice", "Bob"])
    await typist.send_json_to({"type": "typing"})
    assert (await frame_of(reader, "typing"))["user_id"] == alice.pk
    await typist.send_json_to({"type": "post", "body": "sent", "client_id": None})
    assert (await frame_of(reader, "message"))["message"]["body"] == "sent"
    # the next message's typing is not held back by the last one's interval
    await typist.send_json_to({"type": "typing"})
    assert (await frame_of(reader, "typing"))["user_id"] == alice.pk
    await typist.disconnect()
    await reader.disconnect()
