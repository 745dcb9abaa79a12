"""The room socket on the real routing (origin check, sessions, Redis channel layer)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chatsite.asgi import application
from messages_app import services
from messages_app.models import Message, Room, Status, User
from tests.conftest import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")


async def connect(
    room: Room, user: User | None, origin: tuple[bytes, bytes] = ORIGIN, slug: str | None = None
) -> WebsocketCommunicator:
    headers = [origin, (b"host", b"localhost")]
    if user is not None:
        cookie = await sync_to_async(session_cookie)(user)
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, f"/ws/rooms/{slug or room.slug}/", headers=headers)


@pytest.fixture(autouse=True)
def _rare_heartbeats(settings: Any) -> None:
    """Heartbeats (tests/messages_app/realtime) would interleave with the frames here."""
    settings.CHAT_RECONCILE_SECONDS = 300.0


@pytest.fixture
async def socket(room: Room, alice: User) -> AsyncIterator[WebsocketCommunicator]:
    communicator = await connect(room, alice)
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot == {"type": "snapshot", "messages": [], "has_more": False}
    await settled(communicator)
    yield communicator
    await communicator.disconnect()


# Frames that come on their own, whatever a test does: heartbeats (every
# CHAT_RECONCILE_SECONDS) and presence (each socket that opens or closes).
UNASKED = frozenset({"heartbeat", "presence"})


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    """The next frame other than a heartbeat or a presence list."""
    while True:
        frame = await communicator.receive_json_from(timeout=5)
        if frame["type"] not in UNASKED:
            return frame


async def close_of(communicator: WebsocketCommunicator, timeout: float = 10) -> dict[str, Any]:
    """The socket's close, past the frames (presence, say) sent before it."""
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return output


async def settled(communicator: WebsocketCommunicator) -> None:
    """Wait until this socket has heard of itself in the room's presence (it is listed
    right after its snapshot), so that no presence frame of its own comes later."""
    while (await communicator.receive_json_from(timeout=5))["type"] != "presence":
        pass


async def test_consumer_sends_a_snapshot_of_the_newest_messages_in_order(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 3
    for n in range(5):
        await sync_to_async(services.message_post)(room=room, author=alice, body=f"m{n}")
    communicator = await connect(room, alice)
    assert (await communicator.connect())[0]
    snapshot = await receive(communicator)
    assert snapshot["type"] == "snapshot"
    assert [m["body"] for m in snapshot["messages"]] == ["m2", "m3", "m4"]
    first = snapshot["messages"][0]
    assert set(first) >= {
        "id",
        "room",
        "author",
        "role",
        "body",
        "status",
        "version",
        "reply_to",
        "model",
        "error",
        "created_at",
        "finished_at",
    }
    assert (first["room"], first["author"], first["role"], first["status"]) == (
        "general",
        "Alice",
        "user",
        "done",
    )
    await communicator.disconnect()


async def test_consumer_refuses_an_anonymous_socket(room: Room) -> None:
    communicator = await connect(room, None)
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4401


async def test_consumer_refuses_a_foreign_origin(room: Room, alice: User) -> None:
    communicator = await connect(room, alice, origin=(b"origin", b"http://evil.example"))
    connected, _ = await communicator.connect()
    assert not connected


async def test_consumer_refuses_an_unknown_room(room: Room, alice: User) -> None:
    communicator = await connect(room, alice, slug="no-such-room")
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4404


async def test_consumer_post_is_stored_and_broadcast_to_every_socket(
    socket: WebsocketCommunicator, room: Room, bob: User
) -> None:
    other = await connect(room, bob)
    assert (await other.connect())[0]
    assert (await receive(other))["type"] == "snapshot"
    # Opening the public room made Bob a member, and Alice's panel hears of it.
    joined = await receive(socket)
    assert joined["type"] == "members"
    assert [(m["name"], m["role"]) for m in joined["members"]] == [
        ("Alice", "owner"),
        ("Bob", "member"),
    ]
    client_id = str(uuid.uuid4())
    await socket.send_json_to({"type": "post", "body": "hi @gpt", "client_id": client_id})
    for communicator in (socket, other):
        # (Bob's own socket may hear of his joining too: members frames are skipped.)
        frames = [f for f in [await receive(communicator)] if f["type"] != "members"]
        while len(frames) < 2:
            frame = await receive(communicator)
            if frame["type"] != "members":
                frames.append(frame)
        user_frame, reply_frame = frames
        assert user_frame["type"] == "message"
        assert (user_frame["message"]["body"], user_frame["message"]["client_id"]) == (
            "hi @gpt",
            client_id,
        )
        assert reply_frame["message"]["role"] == "assistant"
        assert reply_frame["message"]["status"] == "pending"
    assert await sync_to_async(Message.objects.count)() == 2
    await other.disconnect()


async def test_consumer_resend_with_same_client_id_stores_one_message(
    socket: WebsocketCommunicator,
) -> None:
    frame = {"type": "post", "body": "once", "client_id": str(uuid.uuid4())}
    await socket.send_json_to(frame)
    assert (await receive(socket))["message"]["body"] == "once"
    await socket.send_json_to(frame)
    assert await socket.receive_nothing(timeout=0.5)
    assert await sync_to_async(Message.objects.count)() == 1


@pytest.mark.parametrize(
    "raw,code",
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ("42", "invalid_frame"),
        ('"post"', "invalid_frame"),
        ("{}", "missing_type"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "post"}', "missing_body"),
        ('{"type": "post", "body": 5}', "invalid_body"),
        ('{"type": "post", "body": ""}', "empty_body"),
        ('{"type": "post", "body": "  \\n "}', "empty_body"),
        ('{"type": "post", "body": "hi", "client_id": "nope"}', "invalid_client_id"),
        ('{"type": "cancel"}', "invalid_id"),
        ('{"type": "cancel", "id": "1"}', "invalid_id"),
        ('{"type": "cancel", "id": 999999}', "not_found"),
    ],
)
async def test_consumer_answers_a_bad_frame_with_an_error_and_stays_open(
    socket: WebsocketCommunicator, raw: str, code: str
) -> None:
    await socket.send_to(text_data=raw)
    error = await receive(socket)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["detail"]
    # Still open and working.
    await socket.send_json_to({"type": "post", "body": "still here"})
    assert (await receive(socket))["message"]["body"] == "still here"
    assert await sync_to_async(Message.objects.count)() == 1


async def test_consumer_rejects_binary_and_oversize_frames(
    socket: WebsocketCommunicator, settings: Any
) -> None:
    await socket.send_to(bytes_data=b"\x00\x01")
    assert (await receive(socket))["code"] == "binary_frame"
    await socket.send_to(text_data=json.dumps({"type": "post", "body": "x" * 4001}))
    assert (await receive(socket))["code"] == "body_too_long"
    await socket.send_to(text_data="x" * (4000 * 6 + 2048))
    assert (await receive(socket))["code"] == "frame_too_large"
    assert await sync_to_async(Message.objects.count)() == 0


async def test_consumer_cancel_stops_an_open_reply_for_everyone(
    socket: WebsocketCommunicator, room: Room, alice: User
) -> None:
    result = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt go")
    assert result.reply is not None
    await receive(socket)
    await receive(socket)
    await socket.send_json_to({"type": "cancel", "id": result.reply.pk})
    frame = await receive(socket)
    assert frame["type"] == "message"
    assert (frame["message"]["id"], frame["message"]["status"]) == (result.reply.pk, "cancelled")
    row = await sync_to_async(Message.objects.get)(pk=result.reply.pk)
    assert row.status == Status.CANCELLED
    # Cancelling again is an error, not a crash.
    await socket.send_json_to({"type": "cancel", "id": result.reply.pk})
    assert (await receive(socket))["code"] == "not_streaming"


async def test_consumer_cannot_cancel_a_reply_of_another_room(
    socket: WebsocketCommunicator, alice: User
) -> None:
    other = await sync_to_async(Room.objects.create)(name="Other", slug="other")
    result = await sync_to_async(services.message_post)(
        room=other, author=alice, body="@gpt elsewhere"
    )
    assert result.reply is not None
    await socket.send_json_to({"type": "cancel", "id": result.reply.pk})
    assert (await receive(socket))["code"] == "not_found"
    row = await sync_to_async(Message.objects.get)(pk=result.reply.pk)
    assert row.status == Status.PENDING


async def test_consumer_relays_deltas_after_the_snapshot(room: Room, alice: User) -> None:
    result = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt go")
    assert result.reply is not None
    reply_id = result.reply.pk
    attempt = await sync_to_async(services.reply_claim)(message_id=reply_id, model="m")
    await sync_to_async(services.reply_append)(message_id=reply_id, attempt=attempt, text="Hel")
    communicator = await connect(room, alice)
    assert (await communicator.connect())[0]
    snapshot = await receive(communicator)
    held = {m["id"]: m for m in snapshot["messages"]}[reply_id]
    assert (held["body"], held["version"], held["status"]) == ("Hel", 3, "streaming")
    await sync_to_async(services.reply_append)(message_id=reply_id, attempt=attempt, text="lo")
    assert await receive(communicator) == {
        "type": "delta",
        "id": reply_id,
        "version": 4,
        "offset": 3,
        "text": "lo",
    }
    await communicator.disconnect()


async def test_consumer_refuses_a_room_slug_longer_than_any_room(room: Room, alice: User) -> None:
    for slug in ("x" * 500, "%00", "caf%C3%A9"):
        communicator = await connect(room, alice, slug=slug)
        connected, code = await communicator.connect()
        assert (connected, code) == (False, 4404)


async def test_consumer_post_with_nul_and_control_characters_is_stored_clean(
    socket: WebsocketCommunicator,
) -> None:
    await socket.send_json_to({"type": "post", "body": "a\u0000b\u0007c\u001bd"})
    frame = await receive(socket)
    assert frame["message"]["body"] == "abcd"
    row = await sync_to_async(Message.objects.get)()
    assert row.body == "abcd"


async def test_consumer_rate_limit_is_an_error_frame_and_stores_nothing(
    socket: WebsocketCommunicator, settings: Any
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 1
    await socket.send_json_to({"type": "post", "body": "@gpt first"})
    await receive(socket)
    await receive(socket)
    await socket.send_json_to({"type": "post", "body": "@gpt second"})
    error = await receive(socket)
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    assert await sync_to_async(Message.objects.count)() == 2


# --- the connection's plumbing: nothing left behind, closes from the hub ---------------


async def test_consumer_whose_snapshot_fails_leaves_nothing_in_the_hub_nor_the_socket_lease(
    room: Room, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from messages_app import consumers, limits
    from messages_app.realtime.hub import hub

    def broken(**kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(consumers, "room_snapshot", broken)
    communicator = await connect(room, alice)
    with pytest.raises(RuntimeError, match="went away"):
        await communicator.connect()
        await communicator.receive_output(timeout=5)
    assert hub().rooms == {} and hub().users == {}
    # channels runs no disconnect() for a connect that raised: the place must not leak.
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 0


async def test_consumer_whose_subscription_times_out_leaves_nothing_in_the_hub(
    room: Room, alice: User, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from messages_app.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "SUBSCRIBE_TIMEOUT", 0.3)
    settings.CHAT_EVENTS_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    communicator = await connect(room, alice)
    with pytest.raises(TimeoutError):
        await communicator.connect(timeout=10)
        await communicator.receive_output(timeout=10)
    assert hub_module.hub().rooms == {} and hub_module.hub().users == {}


async def test_consumer_refused_for_its_session_never_joins_the_hub(room: Room) -> None:
    from messages_app.realtime.hub import hub

    communicator = await connect(room, None)
    connected, code = await communicator.connect()
    assert (connected, code) == (False, 4401)
    assert hub().rooms == {}


async def test_consumer_closed_by_user_sockets_close_gets_its_code_and_leaves_the_hub(
    room: Room, alice: User, bob: User
) -> None:
    from messages_app import events
    from messages_app.realtime.hub import hub

    # Bob is a member already: opening the room broadcasts no members frame.
    await sync_to_async(services.membership_add)(room=room, user=bob)
    mine = await connect(room, alice)
    theirs = await connect(room, bob)
    for communicator in (mine, theirs):
        assert (await communicator.connect())[0]
        assert (await receive(communicator))["type"] == "snapshot"
    await sync_to_async(events.user_sockets_close)(user_id=alice.pk, code=4401)
    closed = await close_of(mine)
    assert closed == {"type": "websocket.close", "code": 4401}
    await mine.wait(timeout=5)
    # the other user's socket is untouched
    await sync_to_async(services.message_post)(room=room, author=bob, body="still live")
    assert (await receive(theirs))["message"]["body"] == "still live"
    assert {m.user_id for m in hub().rooms[room.pk]} == {bob.pk}
    await theirs.disconnect()
