"""A user's messages: posting (with the pending replies it calls for), editing,
deleting."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from messages_app import events, permissions
from messages_app.mentions import mentioned_handles
from messages_app.models import (
    OPEN_STATUSES,
    Message,
    MessageEdit,
    ReplyChunk,
    ReplyRevision,
    Role,
    Room,
    Status,
    User,
)
from messages_app.protocol import ClientError
from messages_app.selectors import message_get
from messages_app.services.assistants import _assistants_called
from messages_app.services.common import _broadcast_row, _clean_body
from messages_app.services.replies import _check_reply_limits, _close_reply, _reply_create


@dataclass(frozen=True)
class PostResult:
    message: Message
    reply: Message | None  # the first of ``replies``
    created: bool
    # One pending reply per assistant the message called, in the order mentioned.
    replies: tuple[Message, ...] = ()


# --- deleting -------------------------------------------------------------------


@transaction.atomic
def message_delete(*, message_id: Any, actor: User, room: Room | None = None) -> Message:
    """Delete a message as a tombstone: body emptied, row kept, who and when recorded.

    ``room``, when given, is the only room the id is looked up in (the socket's).
    A reply that is still streaming is cancelled first, so no append lands after.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    rows = Message.objects.select_for_update().filter(pk=message_id)
    if room is not None:
        rows = rows.filter(room=room)
    message = rows.first()
    if message is None:
        raise ClientError("not_found", f"There is no message {message_id} in this room.")
    message_room = Room.objects.get(pk=message.room_id)
    role = permissions.role_of(actor, message_room)
    if not permissions.can_read(actor, message_room, role):
        raise ClientError("not_member", "You are not a member of this room.")
    if not permissions.can_delete_message(actor, message_room, role, message):
        raise ClientError(
            "forbidden", "Only its author, the room's owners and moderators can delete this."
        )
    if message.deleted_at is not None:
        raise ClientError("already_deleted", f"Message {message_id} is already deleted.")
    if message.status in OPEN_STATUSES:
        _close_reply(message_id=message.pk, attempt=None, status=Status.CANCELLED)
        transaction.on_commit(lambda: events.announce_cancel(message.pk))
    now = timezone.now()
    # The text goes from the database: the body, any chunk a stream left, and
    # the texts it had before its edits.
    ReplyChunk.objects.filter(message_id=message.pk).delete()
    # And the text of its earlier attempts (their usage stays counted).
    ReplyRevision.objects.filter(message_id=message.pk).update(text="", error="")
    MessageEdit.objects.filter(message_id=message.pk).delete()
    Message.objects.filter(pk=message.pk).update(
        body="",
        text_length=0,
        unfolded_length=0,
        error="",
        deleted_at=now,
        deleted_by=actor,
        version=F("version") + 1,
        updated_at=now,
    )
    message = message_get(message_id=message.pk)
    _broadcast_row(message)
    return message


@transaction.atomic
def message_edit(*, room: Room, message_id: Any, actor: User, body: Any) -> Message:
    """Replace the text of ``actor``'s own message in ``room``; the row keeps its place.

    The body gets the same checks and cleaning as a post's. The row's version goes
    up and ``edited_at`` is set; the new row is broadcast. Only the author may edit
    (``permissions.can_edit``); a reply (assistant row) and a deleted message
    cannot be edited. The edit never asks @gpt, even when it adds a mention, and
    the replies already given stay as they are (to ask again, post a new message).
    An edit to the same text changes nothing and is not broadcast.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    body = _clean_body(body)
    message = Message.objects.select_for_update().filter(pk=message_id, room=room).first()
    if message is None:
        raise ClientError("not_found", f"There is no message {message_id} in this room.")
    role = permissions.role_of(actor, room)
    if not permissions.can_read(actor, room, role):
        raise ClientError("not_member", "You are not a member of this room.")
    if message.role != Role.USER:
        raise ClientError("not_editable", "A reply cannot be edited; ask again in a new message.")
    if message.deleted_at is not None:
        raise ClientError("already_deleted", f"Message {message_id} was deleted.")
    if not permissions.can_edit(actor, room, role, message):
        raise ClientError("forbidden", "Only its author can edit a message.")
    if body == message.body:
        return message_get(message_id=message.pk)
    now = timezone.now()
    MessageEdit.objects.create(message=message, previous_body=message.body, edited_at=now)
    Message.objects.filter(pk=message.pk).update(
        body=body,
        text_length=len(body),
        edited_at=now,
        version=F("version") + 1,
        updated_at=now,
    )
    message = message_get(message_id=message.pk)
    _broadcast_row(message)
    return message


# --- posting ------------------------------------------------------------------


def message_post(
    *, room: Room, author: User, body: Any, client_id: uuid.UUID | str | None = None
) -> PostResult:
    """Store a user's message, and a pending @gpt placeholder if it mentions @gpt.

    The same ``client_id`` from the same author returns the stored message
    (a resend after a reconnect) and stores nothing.
    """
    body = _clean_body(body)
    if client_id is not None and not isinstance(client_id, uuid.UUID):
        try:
            client_id = uuid.UUID(str(client_id))
        except ValueError:
            raise ClientError("invalid_client_id", "client_id must be a UUID.") from None
    try:
        return _message_post(room=room, author=author, body=body, client_id=client_id)
    except IntegrityError:
        # A concurrent resend of the same client_id won the race: return its row.
        if client_id is None:
            raise
        return _existing_post(author=author, client_id=client_id)


def _existing_post(*, author: User, client_id: uuid.UUID) -> PostResult:
    message = Message.objects.select_related("room", "author").get(
        author=author, client_id=client_id
    )
    replies = tuple(message.replies.select_related("room", "assistant").order_by("id"))
    return PostResult(
        message=message, reply=replies[0] if replies else None, created=False, replies=replies
    )


@transaction.atomic
def _message_post(
    *, room: Room, author: User, body: str, client_id: uuid.UUID | None
) -> PostResult:
    if client_id is not None:
        existing_room = (
            Message.objects.filter(author=author, client_id=client_id)
            .values_list("room_id", flat=True)
            .first()
        )
        if existing_room is not None and existing_room != room.pk:
            # A resend answers with the stored row, which the sender's room would
            # never show: refuse instead of leaving the composer waiting.
            raise ClientError(
                "client_id_reused", "That client_id was used for a message in another room."
            )
        if existing_room is not None:
            return _existing_post(author=author, client_id=client_id)
    # Only what the author wrote calls assistants: a reply's text is never read
    # for mentions, so assistants cannot call each other (no bot loops).
    assistants = _assistants_called(mentioned_handles(body))
    if assistants:
        _check_reply_limits(author, count=len(assistants))
    message = Message.objects.create(
        room=room, author=author, role=Role.USER, body=body, client_id=client_id
    )
    _broadcast_row(message)
    replies = tuple(_reply_create(message=message, assistant=a) for a in assistants)
    return PostResult(
        message=message, reply=replies[0] if replies else None, created=True, replies=replies
    )
