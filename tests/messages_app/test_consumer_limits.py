"""The limits as a socket meets them: the real consumer and routing over the real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from messages_app import limits
from messages_app.models import Message, Room, User
from tests.messages_app.test_consumers import connect, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def opened(room: Room, user: User) -> WebsocketCommunicator:
    communicator = await connect(room, user)
    connected, _ = await communicator.connect()
    assert connected
    assert (await receive(communicator))["type"] == "snapshot"
    return communicator


async def test_consumer_refuses_the_post_past_the_burst_with_retry_after_and_stores_nothing(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_POST_BURST, settings.CHAT_POST_BURST_SECONDS = 10, 10
    socket = await opened(room, alice)
    for n in range(10):
        await socket.send_json_to({"type": "post", "body": f"message {n}"})
        frame = await receive(socket)
        assert (frame["type"], frame["message"]["body"]) == ("message", f"message {n}")
    await socket.send_json_to({"type": "post", "body": "one too many"})
    error = await receive(socket)
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    assert "at most 10 messages in 10 seconds" in error["detail"]
    assert 0 < error["retry_after"] <= 10
    assert await sync_to_async(Message.objects.count)() == 10
    assert not await sync_to_async(Message.objects.filter(body="one too many").exists)()
    # The socket stays open and usable for what is not a post.
    await socket.send_json_to({"type": "cancel", "id": 999999})
    assert (await receive(socket))["code"] == "not_found"
    await socket.disconnect()


async def test_consumer_closes_the_socket_past_the_limit_with_4429_and_says_why(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.CHAT_MAX_SOCKETS_PER_USER = 20
    sockets = [await opened(room, alice) for _ in range(20)]
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 20
    extra = await connect(room, alice)
    connected, _ = await extra.connect()
    assert connected  # accepted, then closed: the page sees the code
    error = await receive(extra)
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    assert "20 connections open" in error["detail"]
    assert error["retry_after"] == settings.CHAT_SOCKET_LEASE_SECONDS
    closed = await extra.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4429}
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 20
    # Another user is not concerned.
    other = await opened(room, bob)
    # Closing one of Alice's sockets frees its place.
    await sockets.pop().disconnect()
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 19
    again = await opened(room, alice)
    for communicator in [*sockets, again, other]:
        await communicator.disconnect()
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 0


async def test_consumer_counts_the_sockets_other_web_processes_hold(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_MAX_SOCKETS_PER_USER = 3
    # Leases taken elsewhere (another web process) are in the same Redis count.
    elsewhere = [limits.SocketLease(alice.pk) for _ in range(3)]
    for lease in elsewhere:
        await sync_to_async(lease.acquire)()
    refused = await connect(room, alice)
    assert (await refused.connect())[0]
    assert (await receive(refused))["code"] == "rate_limited"
    assert (await refused.receive_output(timeout=5))["code"] == 4429
    await sync_to_async(elsewhere[0].release)()
    socket = await opened(room, alice)
    await socket.disconnect()


async def test_consumer_gives_the_place_back_when_the_socket_closes(
    room: Room, alice: User
) -> None:
    socket = await opened(room, alice)
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 1
    await socket.disconnect()
    assert await sync_to_async(limits.open_sockets)(alice.pk) == 0
