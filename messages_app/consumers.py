"""The room WebSocket: protocol only (docs/architecture.md, "The WebSocket protocol").

Frames, error codes and close codes come from ``messages_app.protocol``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from messages_app import limits, permissions, protocol, services
from messages_app.models import Room
from messages_app.protocol import ClientError
from messages_app.realtime.hub import hub
from messages_app.realtime.members import Member, writer_for
from messages_app.selectors import HistoryPage, room_history, room_snapshot, snapshot_has_more

logger = logging.getLogger(__name__)

_SLUG_RE = re.compile(r"[-a-zA-Z0-9_]{1,80}")

# The scope key under which ``ServerSendMiddleware`` passes the server's own send.
SERVER_SEND = "chat.server_send"

# Close calls the hub started, kept until done (a task needs a reference).
_closing: set[asyncio.Task[None]] = set()


class ServerSendMiddleware:
    """Give the room consumer the ASGI server's own ``send`` (``scope[SERVER_SEND]``).

    Channels' session middleware wraps ``send``; the fan-out writes text frames
    only, which that wrapper passes through untouched, and needs the server's
    callable to recognise daphne (``realtime.daphne``). Outermost.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await self.app({**scope, SERVER_SEND: send}, receive, send)


class RoomConsumer(AsyncWebsocketConsumer):
    """One socket watching one room.

    Row changes reach the socket through this process's ``realtime.hub()``, not the
    Channels layer (none is configured): the hub writes them to the socket itself.
    """

    room: Room
    member: Member
    lease: limits.SocketLease
    lease_renewal: asyncio.Task[None]

    async def connect(self) -> None:
        """Called when a browser opens the socket: authenticate, join, then snapshot."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await _room_by_slug(slug)
        if room is None:
            await self.close(code=protocol.CLOSE_ROOM_NOT_FOUND)
            return
        if not await _open_room(user, room):
            # A private room answers as if it did not exist; accepted first so
            # that the browser sees the close code (daphne hides a refusal).
            await self.accept()
            await self.close(code=protocol.CLOSE_ROOM_NOT_FOUND)
            return
        self.room = room
        # The user's sockets across every web process are counted in Redis; the
        # one over the limit is accepted and then closed, so the page gets the
        # close code (a refused handshake shows the browser a bare failure).
        lease = limits.SocketLease(user.pk)
        try:
            await sync_to_async(lease.acquire, thread_sensitive=False)()
        except ClientError as error:
            await self.accept()
            await self.send(text_data=protocol.error_frame_for(error))
            await self.close(code=protocol.CLOSE_TOO_MANY_SOCKETS)
            return
        self.lease = lease
        self.lease_renewal = asyncio.create_task(self._renew_lease())
        # Join *before* reading the snapshot (the subscription is confirmed when
        # join returns): a change committed in between is held for this socket and
        # written after the snapshot, never lost; what the snapshot already holds
        # (by version) is not written again.
        self.member = Member(
            writer_for(
                self.scope.get(SERVER_SEND) or self.base_send, settings.CHAT_SOCKET_BUFFER_BYTES
            ),
            room_id=room.pk,
            user_id=user.pk,
            on_close=self._closed_by_hub,
            limit=settings.CHAT_SOCKET_BUFFER_BYTES,
        )
        try:
            await hub().join(self.member)
            await self.accept()
            snapshot, has_more = await database_sync_to_async(_snapshot)(room=room)
            await self.send(text_data=protocol.snapshot_frame(snapshot, has_more=has_more))
            self.member.start({m["id"]: m["version"] for m in snapshot})
            # Listed in the room's presence once it sees the room: every socket of
            # the room, on every web process, gets the new list (its own too).
            await hub().enter(self.member, user.get_display_name())
        except BaseException:
            # Any step that fails (Redis unreachable, the snapshot's query, a client
            # gone meanwhile) leaves nothing in the hub: channels does not call
            # disconnect() for a connect that raised. Nor its socket's lease.
            await hub().leave(self.member)
            await self._release_lease()
            raise

    def _closed_by_hub(self, code: int) -> None:
        """The hub ends this socket (too slow, session ended): close it with ``code``."""
        task = asyncio.ensure_future(self.close(code=code))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes, for any reason."""
        if hasattr(self, "member"):
            await hub().leave(self.member)
        await self._release_lease()

    async def _release_lease(self) -> None:
        """Give this socket's place back (once), and stop renewing it."""
        lease = getattr(self, "lease", None)
        if lease is None:
            return
        del self.lease
        self.lease_renewal.cancel()
        await sync_to_async(lease.release, thread_sensitive=False)()

    async def _renew_lease(self) -> None:
        """Keep this socket's lease alive while it is open (it expires otherwise)."""
        while True:
            await asyncio.sleep(self.lease.renew_every())
            await sync_to_async(self.lease.renew, thread_sensitive=False)()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the browser."""
        try:
            frame = protocol.parse_client_frame(
                text_data, max_length=protocol.max_frame_length(settings.CHAT_MAX_BODY_LENGTH)
            )
            user = self.scope["user"]
            if isinstance(frame, protocol.Post):
                # Checked on every frame: a member removed (or who left) while the
                # socket is open can no longer post through it. Then counted against
                # the post limits, before anything is stored: a refused post stores
                # nothing.
                await database_sync_to_async(_post)(room=self.room, user=user, frame=frame)
                await hub().typing_ended(self.member)
            elif isinstance(frame, protocol.Cancel):
                await database_sync_to_async(services.reply_cancel)(
                    room=self.room, message_id=frame.id, actor=user
                )
            elif isinstance(frame, protocol.Delete):
                await database_sync_to_async(services.message_delete)(
                    room=self.room, message_id=frame.id, actor=user
                )
            elif isinstance(frame, protocol.Retry):
                await database_sync_to_async(services.reply_regenerate)(
                    room=self.room, message_id=frame.id, actor=user
                )
            elif isinstance(frame, protocol.History):
                # Answered to this socket only; its rows are live from then on like
                # the snapshot's (the page applies later frames by their versions).
                page = await database_sync_to_async(_history)(
                    room=self.room, user=user, frame=frame
                )
                await self.send(
                    text_data=protocol.history_frame(
                        page.messages, has_more=page.has_more, has_newer=page.has_newer
                    )
                )
            elif isinstance(frame, protocol.Edit):
                await database_sync_to_async(_edit)(room=self.room, user=user, frame=frame)
            elif isinstance(frame, protocol.Typing):
                # One frame per CHAT_TYPING_INTERVAL_SECONDS per user and room reaches
                # the others, a faster one is dropped silently; the one that passes
                # is checked (only who may post may type) before it goes out.
                await hub().typing(
                    self.member,
                    user.get_display_name(),
                    check=lambda: database_sync_to_async(_may_type)(room=self.room, user=user),
                )
            elif isinstance(frame, protocol.Read):
                await database_sync_to_async(services.membership_mark_read)(
                    room=self.room, user=user, message_id=frame.id
                )
        except ClientError as error:
            await self.send(text_data=protocol.error_frame_for(error))
        except Exception:
            logger.exception(
                "frame from user %s in room %s failed", self.scope["user"].pk, self.room.slug
            )
            await self.send(
                text_data=protocol.error_frame(
                    "server_error", "The server could not handle that frame."
                )
            )


@database_sync_to_async
def _open_room(user: Any, room: Room) -> bool:
    """Whether ``user`` may watch ``room``; opening a public room joins it."""
    role = permissions.role_of(user, room)
    if not permissions.can_see_room(user, room, role):
        return False
    if role is None and permissions.can_join(user, room, role):
        services.membership_join(room=room, user=user)
    return True


def _may_type(*, room: Room, user: Any) -> None:
    if not permissions.can_type(user, room, permissions.role_of(user, room)):
        raise ClientError("not_member", "You are not a member of this room (any more).")


def _post(*, room: Room, user: Any, frame: protocol.Post) -> None:
    if not permissions.can_post(user, room, permissions.role_of(user, room)):
        raise ClientError("not_member", "You are not a member of this room (any more).")
    limits.post_allow(user=user)
    services.message_post(room=room, author=user, body=frame.body, client_id=frame.client_id)


def _snapshot(*, room: Room) -> tuple[list[dict[str, Any]], bool]:
    snapshot = room_snapshot(room=room)
    return snapshot, snapshot_has_more(room=room, snapshot=snapshot)


def _history(*, room: Room, user: Any, frame: protocol.History) -> HistoryPage:
    if not permissions.can_read(user, room, permissions.role_of(user, room)):
        raise ClientError("not_member", "You are not a member of this room (any more).")
    limits.history_allow(user=user)
    return room_history(room=room, anchor=frame.anchor, message_id=frame.id, limit=frame.limit)


def _edit(*, room: Room, user: Any, frame: protocol.Edit) -> None:
    if not permissions.can_post(user, room, permissions.role_of(user, room)):
        raise ClientError("not_member", "You are not a member of this room (any more).")
    limits.edit_allow(user=user)
    services.message_edit(room=room, message_id=frame.id, actor=user, body=frame.body)


@database_sync_to_async
def _room_by_slug(slug: str) -> Room | None:
    # A slug no room can have (too long, NUL or other characters from the URL)
    # is not looked up: Postgres would refuse a NUL outright.
    if not _SLUG_RE.fullmatch(slug):
        return None
    return Room.objects.filter(slug=slug).first()
