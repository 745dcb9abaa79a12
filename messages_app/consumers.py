"""The room WebSocket: protocol only (DESIGN.md, "The WebSocket protocol")."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from messages_app import events, services
from messages_app.models import Room
from messages_app.selectors import room_snapshot
from messages_app.services import ClientError

logger = logging.getLogger(__name__)

_SLUG_RE = re.compile(r"[-a-zA-Z0-9_]{1,80}")

# Close codes (4000-4999 are the application's): the browser shows why.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_ROOM_NOT_FOUND = 4404

# A post frame carries at most CHAT_MAX_BODY_LENGTH characters, each up to 4
# bytes and maybe JSON-escaped (6 bytes); anything larger is refused unread.
MAX_FRAME_OVERHEAD = 1024


class RoomConsumer(AsyncWebsocketConsumer):
    """One socket watching one room."""

    room: Room
    group: str

    async def connect(self) -> None:
        """Called when a browser opens the socket: authenticate, join, then snapshot."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await _room_by_slug(slug)
        if room is None:
            await self.close(code=CLOSE_ROOM_NOT_FOUND)
            return
        self.room = room
        self.group = events.room_group(room.pk)
        # The version each row had when this socket last got it: events the
        # snapshot already includes are not sent again.
        self.versions: dict[int, int] = {}
        # Join *before* reading the snapshot: a change committed in between is
        # then queued for this socket and arrives after the snapshot, never lost.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        snapshot = await database_sync_to_async(room_snapshot)(room=room)
        self.versions = {m["id"]: m["version"] for m in snapshot}
        await self.send(text_data=events.dumps({"type": "snapshot", "messages": snapshot}))

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes, for any reason."""
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the browser."""
        try:
            if text_data is None:
                raise ClientError("binary_frame", "Frames must be JSON text, not binary.")
            frame = _parse_frame(text_data)
            kind = frame.get("type")
            if kind == "post":
                await self._post(frame)
            elif kind == "cancel":
                await database_sync_to_async(services.reply_cancel)(
                    room=self.room, message_id=frame.get("id")
                )
            elif kind is None:
                raise ClientError("missing_type", 'A frame needs a "type".')
            else:
                raise ClientError("unknown_type", f"Unknown frame type {str(kind)[:40]!r}.")
        except ClientError as error:
            await self._send_error(error.code, error.detail)
        except Exception:
            logger.exception(
                "frame from user %s in room %s failed", self.scope["user"].pk, self.room.slug
            )
            await self._send_error("server_error", "The server could not handle that frame.")

    async def _post(self, frame: dict[str, Any]) -> None:
        if "body" not in frame:
            raise ClientError("missing_body", 'A post needs a "body".')
        await database_sync_to_async(services.message_post)(
            room=self.room,
            author=self.scope["user"],
            body=frame["body"],
            client_id=frame.get("client_id"),
        )

    async def _send_error(self, code: str, detail: str) -> None:
        await self.send(text_data=events.dumps({"type": "error", "code": code, "detail": detail}))

    async def _forward(self, event: dict[str, Any]) -> None:
        message_id, version = event["id"], event["version"]
        if version <= self.versions.get(message_id, 0):
            return  # already in what this socket holds
        self.versions[message_id] = version
        await self.send(text_data=event["frame"])

    async def message_changed(self, event: dict[str, Any]) -> None:
        """Called when a row of the room is inserted or changed other than by an append."""
        await self._forward(event)

    async def message_delta(self, event: dict[str, Any]) -> None:
        """Called when text is appended to a reply of the room."""
        await self._forward(event)


def _parse_frame(text_data: str) -> dict[str, Any]:
    limit = settings.CHAT_MAX_BODY_LENGTH * 6 + MAX_FRAME_OVERHEAD
    if len(text_data) > limit:
        raise ClientError("frame_too_large", f"A frame is at most {limit} characters.")
    try:
        frame = json.loads(text_data)
    except ValueError:
        raise ClientError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise ClientError("invalid_frame", "A frame must be a JSON object.")
    return frame


@database_sync_to_async
def _room_by_slug(slug: str) -> Room | None:
    # A slug no room can have (too long, NUL or other characters from the URL)
    # is not looked up: Postgres would refuse a NUL outright.
    if not _SLUG_RE.fullmatch(slug):
        return None
    return Room.objects.filter(slug=slug).first()
