"""Posting to several assistants through the room socket (issue 13)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from messages_app.models import Assistant, Message, Role, Room, User
from tests.messages_app.test_consumers import connect, receive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _rare_heartbeats(settings: Any) -> None:
    settings.CHAT_RECONCILE_SECONDS = 300.0


@pytest.fixture
async def socket(room: Room, alice: User) -> AsyncIterator[WebsocketCommunicator]:
    communicator = await connect(room, alice)
    assert (await communicator.connect())[0]
    assert (await receive(communicator))["type"] == "snapshot"
    yield communicator
    await communicator.disconnect()


async def message_frames(socket: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    frames = []
    while len(frames) < count:
        frame = await receive(socket)
        if frame["type"] == "message":
            frames.append(frame["message"])
    return frames


async def test_post_frame_mentioning_two_assistants_broadcasts_a_pending_reply_of_each(
    socket: WebsocketCommunicator, room: Room
) -> None:
    await sync_to_async(Assistant.objects.create)(handle="claude", name="Claude")
    await sync_to_async(Assistant.objects.get_or_create)(handle="gpt", defaults={"name": "GPT"})
    client_id = str(uuid.uuid4())
    body = "@claude, then @gpt: which is faster?"
    await socket.send_json_to({"type": "post", "body": body, "client_id": client_id})
    question, first, second = await message_frames(socket, 3)
    assert (question["body"], question["assistant"]) == (body, None)
    assert [(f["role"], f["status"], f["reply_to"], f["assistant"]) for f in (first, second)] == [
        ("assistant", "pending", question["id"], {"handle": "claude", "name": "Claude"}),
        ("assistant", "pending", question["id"], {"handle": "gpt", "name": "GPT"}),
    ]
    rows = await sync_to_async(list)(
        Message.objects.filter(role=Role.ASSISTANT).values_list("assistant__handle", flat=True)
    )
    assert sorted(rows) == ["claude", "gpt"]


async def test_post_frame_mentioning_inactive_and_unknown_handles_stores_only_the_message(
    socket: WebsocketCommunicator, room: Room
) -> None:
    await sync_to_async(Assistant.objects.create)(handle="sleepy", name="Sleepy", active=False)
    await socket.send_json_to({"type": "post", "body": "@sleepy @nobody hi"})
    (question,) = await message_frames(socket, 1)
    assert question["body"] == "@sleepy @nobody hi"
    await socket.send_json_to({"type": "post", "body": "and after"})
    (after,) = await message_frames(socket, 1)  # no error frame, no reply between
    assert after["body"] == "and after"
    assert await sync_to_async(Message.objects.filter(role=Role.ASSISTANT).count)() == 0
