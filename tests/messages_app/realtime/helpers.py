"""Stand-ins for the ASGI server's side of a socket, and frames as services publish them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from messages_app import events
from messages_app.realtime import frames
from messages_app.realtime.members import AsgiWriter, Member


def delta(message_id: int, version: int, offset: int, text: str) -> frames.Frame:
    event = events.delta_event(message_id=message_id, version=version, offset=offset, text=text)
    return frames.parse_event(event["frame"].encode())


def message(message_id: int, version: int, body: str = "") -> frames.Frame:
    payload = {"id": message_id, "version": version, "body": body, "status": "streaming"}
    return frames.parse_event(events.message_event(payload)["frame"].encode())


class Socket:
    """A stand-in for the ASGI server's send: records the frames written and closes."""

    def __init__(self, delay: float = 0.0, *, blocked: bool = False) -> None:
        self.frames: list[dict[str, Any]] = []
        self.delay = delay
        self.written = asyncio.Event()
        self.closed_with: list[int] = []
        self.unblock = asyncio.Event()
        if not blocked:
            self.unblock.set()

    async def __call__(self, event: dict[str, Any]) -> None:
        assert event["type"] == "websocket.send"
        await self.unblock.wait()  # a client that does not read: send never returns
        if self.delay:
            await asyncio.sleep(self.delay)
        self.frames.append(json.loads(event["text"]))
        self.written.set()

    def member(self, *, room_id: int = 1, user_id: int | None = 1, limit: int = 1 << 20) -> Member:
        return Member(
            AsgiWriter(self),
            room_id=room_id,
            user_id=user_id,
            on_close=self.closed_with.append,
            limit=limit,
        )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
