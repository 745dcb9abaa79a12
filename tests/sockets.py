"""Real WebSocket clients of a running stack, applying frames as a browser does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from asgiref.sync import sync_to_async

from messages_app.models import Room, User
from tests.conftest import Stack, session_cookie
from tests.live import ModelServer
from tests.protocol import RoomView


class Socket:
    """A real WebSocket client that applies frames to a RoomView as a browser does."""

    def __init__(self, url: str, cookie: str, origin: str) -> None:
        self.url, self.cookie, self.origin = url, cookie, origin
        self.view = RoomView()
        self.connection: Any = None

    async def open(self) -> Socket:
        self.connection = await websockets.connect(
            self.url, additional_headers={"Cookie": self.cookie, "Origin": self.origin}
        )
        self.view.apply(await asyncio.wait_for(self.connection.recv(), 30))
        assert self.view.snapshots == 1
        return self

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def until(self, predicate: Any, limit: float = 60) -> None:
        """Apply frames until ``predicate(view)`` holds (``limit`` seconds at most)."""
        async with asyncio.timeout(limit):
            while not predicate(self.view):
                self.view.apply(await self.connection.recv())

    async def close(self) -> None:
        await self.connection.close()

    async def closed_code(self, limit: float = 60) -> int:
        """Apply frames until the server closes the socket; its close code."""
        async with asyncio.timeout(limit):
            try:
                while True:
                    self.view.apply(await self.connection.recv())
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                return closed.rcvd.code


async def open_socket(
    stack: Stack, room: Room, user: User, *, port: int | None = None, cookie: str | None = None
) -> Socket:
    """A socket of ``user`` on ``room`` (on the web process at ``port``, else the stack's)."""
    cookie = cookie or await sync_to_async(session_cookie)(user)
    url = stack.ws_url(room.slug)
    if port is not None:
        url = url.replace(f":{stack.port}/", f":{port}/")
    return await Socket(url, cookie, stack.http_url).open()


async def wait_until_held(model_server: ModelServer, limit: float = 60) -> None:
    """Wait until the model server is paused at ``hold_after`` in one stream."""
    async with asyncio.timeout(limit):
        while model_server.stats()["held_streams"] != 1:  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.02)


def reply_finished(reply_id: int) -> Any:
    return lambda view: view.status(reply_id) in {"done", "failed", "cancelled"}


async def wait_for_reply_id(socket: Socket) -> int:
    await socket.until(lambda view: view.reply_ids())
    return socket.view.reply_ids()[-1]
