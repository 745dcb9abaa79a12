"""Every write of a Room or Message row, each followed by its broadcast on commit.

Consumers, views, admin actions and tasks call these; none of them saves a
message or sends to a group on its own (docs/architecture.md).
"""

from __future__ import annotations

import logging
import secrets
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from messages_app import events, limits, permissions, protocol
from messages_app.mentions import mentioned_handles
from messages_app.models import (
    DEFAULT_HANDLE,
    DEFAULT_NAME,
    OPEN_STATUSES,
    Assistant,
    MemberRole,
    Membership,
    Message,
    MessageEdit,
    ReplyChunk,
    ReplyRevision,
    Role,
    Room,
    Status,
    User,
    Visibility,
)
from messages_app.protocol import ClientError
from messages_app.selectors import (
    assistants_called,
    default_assistant_missing,
    member_list,
    message_get,
    message_payload,
    message_text,
    usage_attempts,
)

logger = logging.getLogger(__name__)

_CONTROL_CHARS = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f"}


@dataclass(frozen=True)
class PostResult:
    message: Message
    reply: Message | None  # the first of ``replies``
    created: bool
    # One pending reply per assistant the message called, in the order mentioned.
    replies: tuple[Message, ...] = ()


def mentions_gpt(body: str) -> bool:
    """Whether ``body`` mentions ``@gpt`` (outside code; messages_app/mentions.py)."""
    return "gpt" in mentioned_handles(body)


def clean_text(text: str) -> str:
    """Text as it can be stored: NUL and other control characters dropped.

    Postgres refuses NUL in text; the others are invisible and only confuse.
    Newlines and tabs stay; CRLF becomes LF.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if any(ch in _CONTROL_CHARS for ch in text):
        text = "".join(ch for ch in text if ch not in _CONTROL_CHARS)
    return text


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds half of a UTF-16 pair (JSON's "\\ud800" alone).

    Such a string cannot be encoded as UTF-8, so Postgres can never store it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(text: str, *, code: str, what: str) -> None:
    if has_lone_surrogate(text):
        raise ClientError(
            code, f"{what} holds a broken character (a lone UTF-16 surrogate); remove it."
        )


def _clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ClientError("invalid_body", "The message body must be a string.")
    _check_text(body, code="invalid_text", what="The message")
    body = unicodedata.normalize("NFC", clean_text(body))
    if not body.strip():
        raise ClientError("empty_body", "The message is empty.")
    limit = settings.CHAT_MAX_BODY_LENGTH
    if len(body) > limit:
        raise ClientError(
            "body_too_long", f"The message is {len(body)} characters; the limit is {limit}."
        )
    return body


def _broadcast_row(message: Message) -> None:
    """Send the row as it is now to its room once the transaction commits."""
    event = events.message_event(message_payload(message))
    room_id = message.room_id
    transaction.on_commit(lambda: events.send_to_room(room_id, event))


def _enqueue_reply(message_id: int) -> None:
    """Queue the streaming task once the reply row is committed.

    If the broker cannot take it, the reply is marked failed at once rather than
    left pending until the watchdog gives up on it.
    """
    from chatsite.celery import app  # the Celery app; imported late to keep models importable

    def enqueue() -> None:
        try:
            app.send_task("worker.tasks.stream_reply", args=[message_id])
        except Exception:
            logger.exception("could not queue reply %s", message_id)
            reply_fail(
                message_id=message_id,
                attempt=None,
                error="The reply could not be queued (the task broker is unreachable).",
            )

    transaction.on_commit(enqueue)


# --- accounts -------------------------------------------------------------------


@transaction.atomic
def user_create(*, username: str, password: str, display_name: str = "") -> User:
    """Create an account; the caller has validated the username and the password."""
    _check_text(username, code="invalid_text", what="The username")
    _check_text(display_name, code="invalid_text", what="The display name")
    display_name = " ".join(clean_text(display_name).split())
    return User.objects.create_user(username=username, password=password, display_name=display_name)


# --- rooms --------------------------------------------------------------------


@transaction.atomic
def room_create(
    *,
    name: str,
    created_by: User | None,
    slug: str = "",
    granularity: str = "",
    visibility: str = Visibility.PUBLIC,
) -> Room:
    """A new room; its creator (if any) becomes its owner."""
    if isinstance(name, str):
        _check_text(name, code="invalid_name", what="The room name")
    if isinstance(slug, str):
        _check_text(slug, code="invalid_slug", what="The address")
    if visibility not in Visibility.values:
        raise ClientError(
            "invalid_visibility", f"Visibility must be one of: {', '.join(Visibility.values)}."
        )
    name = " ".join(clean_text(name if isinstance(name, str) else "").split())
    if not name:
        raise ClientError("invalid_name", "A room needs a name.")
    max_name = Room._meta.get_field("name").max_length
    if len(name) > max_name:
        raise ClientError("name_too_long", f"A room name is at most {max_name} characters.")
    if granularity not in ("", *settings.GRANULARITIES):
        raise ClientError("invalid_granularity", f"Unknown granularity {granularity!r}.")
    max_slug = Room._meta.get_field("slug").max_length
    base = slugify(slug or name)[:max_slug].strip("-")
    if not base:
        raise ClientError("invalid_slug", "The room name needs letters or digits for its address.")
    if slug and base != slug:
        raise ClientError(
            "invalid_slug", "An address may only hold lowercase letters, digits and hyphens."
        )
    candidate, n = base, 1
    while Room.objects.filter(slug=candidate).exists():
        if slug:
            raise ClientError("slug_taken", f"The address {slug!r} is taken.")
        n += 1
        suffix = f"-{n}"
        candidate = base[: max_slug - len(suffix)] + suffix
    room = Room.objects.create(
        name=name,
        slug=candidate,
        created_by=created_by,
        granularity=granularity,
        visibility=visibility,
    )
    if created_by is not None:
        Membership.objects.create(room=room, user=created_by, role=MemberRole.OWNER)
    return room


@transaction.atomic
def room_assistant_settings_update(
    *,
    room: Room,
    actor: User,
    instructions: Any,
    context_messages: Any,
    granularity: Any,
) -> Room:
    """Set the room's own instructions for its assistants, how many recent messages
    the model sees (None: ``GPT_CONTEXT_MESSAGES``) and its default granularity.

    Owners, moderators and staff (``permissions.can_configure_assistants``). Every
    value is checked before anything is written: a refusal changes nothing.
    """
    room = _locked_room(room)
    if not permissions.can_configure_assistants(actor, room, permissions.role_of(actor, room)):
        raise ClientError("forbidden", "Only the room's owners and moderators can change this.")
    if not isinstance(instructions, str):
        raise ClientError("invalid_text", "The instructions must be text.")
    _check_text(instructions, code="invalid_text", what="The instructions")
    instructions = clean_text(instructions).strip()
    limit = settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS
    if len(instructions) > limit:
        raise ClientError(
            "instructions_too_long",
            f"The instructions are {len(instructions)} characters; the limit is {limit}.",
        )
    most = settings.CHAT_ROOM_CONTEXT_MESSAGES_MAX
    if context_messages is not None and (
        isinstance(context_messages, bool)
        or not isinstance(context_messages, int)
        or not 1 <= context_messages <= most
    ):
        raise ClientError(
            "invalid_context_messages",
            f"The model can see from 1 to {most} recent messages (blank: the site default).",
        )
    if granularity not in ("", *settings.GRANULARITIES):
        raise ClientError("invalid_granularity", f"Unknown granularity {granularity!r}.")
    Room.objects.filter(pk=room.pk).update(
        assistant_instructions=instructions,
        context_messages=context_messages,
        granularity=granularity,
    )
    room.refresh_from_db()
    return room


# --- membership -----------------------------------------------------------------
#
# Every change of a room's members locks the room's row first, so that two
# changes of one room (the last owner leaving while another is demoted) are
# decided one after the other, each seeing the other's result.


def _broadcast_members(room_id: int) -> None:
    """After commit, send the room's member list to every socket of the room."""

    def send() -> None:
        frame = protocol.members_frame(member_list(room_id=room_id))
        events.send_to_room(room_id, {"type": "room.members", "frame": frame})

    transaction.on_commit(send)


def _close_member_sockets(room_id: int, user_id: int) -> None:
    """After commit, close ``user_id``'s sockets of the room on every web process (4403).

    Best effort here: the membership is gone either way, and every frame such a
    socket still sends is refused (``not_member``).
    """

    def close() -> None:
        try:
            events.user_sockets_close(
                user_id=user_id, code=protocol.CLOSE_FORBIDDEN, room_id=room_id
            )
        except Exception:
            logger.exception("could not close the sockets of user %s in room %s", user_id, room_id)

    transaction.on_commit(close)


def _locked_room(room: Room) -> Room:
    return Room.objects.select_for_update().get(pk=room.pk)


def _check_role(role: Any) -> str:
    if not isinstance(role, str) or role not in MemberRole.values:
        raise ClientError(
            "invalid_role", f"Unknown role {str(role)[:40]!r}: use {', '.join(MemberRole.values)}."
        )
    return role


def _owner_count(room: Room) -> int:
    return Membership.objects.filter(room=room, role=MemberRole.OWNER).count()


def _target(room: Room, user_id: Any) -> Membership:
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise ClientError("invalid_id", "user_id must be a user id (an integer).")
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(room=room, user_id=user_id)
        .first()
    )
    if membership is None:
        raise ClientError("not_member", "That user is not a member of this room.")
    return membership


@transaction.atomic
def membership_add(
    *, room: Room, user: User, role: str = MemberRole.MEMBER, actor: User | None = None
) -> Membership:
    """Make ``user`` a member of ``room`` with ``role``.

    ``actor`` None is the system (a public room opened, an invite accepted: their
    callers checked); otherwise the actor must be allowed to manage roles.
    """
    role = _check_role(role)
    room = _locked_room(room)
    if actor is not None and not permissions.can_manage_roles(
        actor, room, permissions.role_of(actor, room)
    ):
        raise ClientError("forbidden", "Only the room's owners can add members.")
    if Membership.objects.filter(room=room, user=user).exists():
        raise ClientError("already_member", f"{user.get_display_name()} is already a member.")
    membership = Membership.objects.create(room=room, user=user, role=role)
    _broadcast_members(room.pk)
    return membership


def membership_join(*, room: Room, user: User) -> bool:
    """Opening a public room joins it. True when ``user`` became a member now."""
    role = permissions.role_of(user, room)
    if role is not None:
        return False
    if not permissions.can_join(user, room, role):
        raise ClientError("not_member", "This room is private: join it through an invite link.")
    try:
        membership_add(room=room, user=user)
    except (ClientError, IntegrityError):
        return False  # joined meanwhile (another tab)
    return True


@transaction.atomic
def membership_set_role(*, room: Room, user_id: Any, role: Any, actor: User) -> Membership:
    """Give a member another role; the last owner keeps theirs until another owner exists."""
    role = _check_role(role)
    room = _locked_room(room)
    if not permissions.can_manage_roles(actor, room, permissions.role_of(actor, room)):
        raise ClientError("forbidden", "Only the room's owners can change roles.")
    membership = _target(room, user_id)
    if membership.role == role:
        return membership
    if membership.role == MemberRole.OWNER and _owner_count(room) == 1:
        raise ClientError(
            "last_owner", "The room needs an owner: make someone else owner before this change."
        )
    membership.role = role
    membership.save(update_fields=["role"])
    _broadcast_members(room.pk)
    return membership


@transaction.atomic
def membership_remove(*, room: Room, user_id: Any, actor: User) -> None:
    """Remove a member (not oneself: that is ``membership_leave``)."""
    room = _locked_room(room)
    actor_role = permissions.role_of(actor, room)
    membership = _target(room, user_id)
    if membership.user_id == actor.pk:
        raise ClientError("forbidden", "Use Leave to leave a room yourself.")
    if not permissions.can_remove_member(actor, room, actor_role, membership.role):
        raise ClientError(
            "forbidden", "Owners remove anyone; moderators remove plain members only."
        )
    if membership.role == MemberRole.OWNER and _owner_count(room) == 1:
        raise ClientError("last_owner", "The last owner of a room cannot be removed.")
    membership.delete()
    _broadcast_members(room.pk)
    _close_member_sockets(room.pk, membership.user_id)


@transaction.atomic
def membership_leave(*, room: Room, user: User) -> None:
    """``user`` leaves ``room``; the last owner must hand ownership over first."""
    room = _locked_room(room)
    membership = Membership.objects.select_for_update().filter(room=room, user=user).first()
    if membership is None:
        raise ClientError("not_member", "You are not a member of this room.")
    if membership.role == MemberRole.OWNER and _owner_count(room) == 1:
        raise ClientError(
            "last_owner", "You are the room's last owner: make someone else owner, then leave."
        )
    membership.delete()
    _broadcast_members(room.pk)
    _close_member_sockets(room.pk, user.pk)


def membership_mark_read(*, room: Room, user: User, message_id: int) -> int:
    """``user`` has seen ``room`` up to message ``message_id``; their read position now.

    Monotonic: an id at or below the position changes nothing (one guarded UPDATE,
    so two tabs racing cannot move it back). The id must be a message of this room
    (``not_found`` otherwise; a tombstone counts). Staff reading a room they are not
    a member of have no position to move. Nothing is broadcast: the position is
    this user's alone, and only the home page shows it (``selectors.room_list``).
    """
    role = permissions.role_of(user, room)
    if not permissions.can_mark_read(user, room, role):
        if permissions.can_read(user, room, role):
            return 0
        raise ClientError("not_member", "You are not a member of this room (any more).")
    if not Message.objects.filter(room=room, pk=message_id).exists():
        raise ClientError("not_found", "No message of this room has that id.")
    Membership.objects.filter(room=room, user=user, last_read_id__lt=message_id).update(
        last_read_id=message_id
    )
    return (
        Membership.objects.filter(room=room, user=user)
        .values_list("last_read_id", flat=True)
        .first()
        or 0
    )


# --- invites --------------------------------------------------------------------


@transaction.atomic
def room_invite_reset(*, room: Room, actor: User) -> Room:
    """A new invite link for ``room``: the old one stops working at once.

    It expires after ``CHAT_INVITE_HOURS`` (0 = never).
    """
    room = _locked_room(room)
    if not permissions.can_invite(actor, room, permissions.role_of(actor, room)):
        raise ClientError("forbidden", "Only the room's owners and moderators can invite.")
    hours = settings.CHAT_INVITE_HOURS
    room.invite_token = secrets.token_urlsafe(32)
    room.invite_expires_at = timezone.now() + timedelta(hours=hours) if hours else None
    room.save(update_fields=["invite_token", "invite_expires_at"])
    return room


def invite_room(*, token: Any) -> Room:
    """The room a valid invite token opens; ``ClientError`` for a wrong or expired one."""
    if (
        not isinstance(token, str)
        or not token
        or len(token) > 64
        or has_lone_surrogate(token)
        or "\x00" in token
    ):
        raise ClientError("invalid_invite", "This invite link is not valid.")
    room = Room.objects.filter(invite_token=token).first()
    if room is None:
        raise ClientError(
            "invalid_invite",
            "This invite link is not valid: it may have been replaced by a new one.",
        )
    if room.invite_expires_at is not None and room.invite_expires_at <= timezone.now():
        raise ClientError("invite_expired", "This invite link has expired: ask for a new one.")
    return room


def invite_accept(*, token: Any, user: User) -> tuple[Room, bool]:
    """Join the room of a valid invite. Returns the room and whether ``user`` joined now."""
    room = invite_room(token=token)
    if permissions.role_of(user, room) is not None:
        return room, False
    if not permissions.can_join_by_invite(user, room, None):
        raise ClientError("forbidden", "This account cannot join rooms.")
    try:
        membership_add(room=room, user=user)
    except ClientError as error:
        if error.code != "already_member":
            raise
        return room, False
    return room, True


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


@transaction.atomic
def room_delete(*, room: Room, actor: User) -> None:
    """Delete a room with its messages and memberships (cascade): owners and staff.

    Its members' sockets are closed with CLOSE_ROOM_NOT_FOUND after commit.
    """
    room = _locked_room(room)
    if not permissions.can_manage_room(actor, room, permissions.role_of(actor, room)):
        raise ClientError("forbidden", "Only the room's owners can delete it.")
    room_id = room.pk
    user_ids = list(room.memberships.values_list("user_id", flat=True))
    room.delete()

    def close() -> None:
        for user_id in user_ids:
            try:
                events.user_sockets_close(
                    user_id=user_id, code=protocol.CLOSE_ROOM_NOT_FOUND, room_id=room_id
                )
            except Exception:
                logger.exception("could not close the sockets of deleted room %s", room_id)
                return

    transaction.on_commit(close)


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


def assistant_default() -> Assistant:
    """The default ``@gpt`` (every field blank: it follows the ``OPENAI_*`` settings),
    made if it is missing (see ``selectors.default_assistant_missing``)."""
    assistant, _ = Assistant.objects.get_or_create(
        handle=DEFAULT_HANDLE, defaults={"name": DEFAULT_NAME}
    )
    return assistant


def _assistants_called(handles: list[str]) -> list[Assistant]:
    if DEFAULT_HANDLE in handles and default_assistant_missing():
        assistant_default()
    return assistants_called(handles)


def _reply_create(*, message: Message, assistant: Assistant) -> Message:
    """A pending reply of ``assistant`` to ``message``, broadcast and queued on commit."""
    reply = Message.objects.create(
        room=message.room,
        role=Role.ASSISTANT,
        status=Status.PENDING,
        reply_to=message,
        assistant=assistant,
    )
    _broadcast_row(reply)
    _enqueue_reply(reply.pk)
    return reply


def _check_reply_limits(author: User, *, count: int = 1) -> None:
    """Refuse ``count`` new replies beyond the user's limits (open at once, per minute).

    Each reply counts: a message that calls two assistants asks for two. Locks
    the author's row so that two posts of one user are counted one after the
    other, not both against the same count.
    """
    User.objects.select_for_update().filter(pk=author.pk).first()
    asked = Message.objects.filter(role=Role.ASSISTANT, reply_to__author=author)
    open_limit = settings.GPT_MAX_OPEN_REPLIES_PER_USER
    minute_limit = settings.GPT_MAX_REPLIES_PER_MINUTE
    if count > min(open_limit, minute_limit):
        raise ClientError(
            "rate_limited",
            f"This message calls {count} assistants; you may ask for at most "
            f"{min(open_limit, minute_limit)} replies at once.",
        )
    if asked.filter(status__in=OPEN_STATUSES).count() + count > open_limit:
        raise ClientError(
            "rate_limited",
            f"You already have {open_limit} @gpt replies in progress; wait for one to finish."
            if count == 1
            else f"At most {open_limit} replies may be in progress at once and this message "
            f"asks for {count}; wait for one to finish.",
        )
    since = timezone.now() - timedelta(seconds=60)
    # Every attempt counts, a regenerate's too, when it was asked for.
    recent = [at for at, _tokens in usage_attempts(user_id=author.pk, since=since)]
    if len(recent) + count > minute_limit:
        # Allowed again when enough of them are a minute old to leave ``count`` places.
        frees_at = recent[len(recent) + count - 1 - minute_limit] + timedelta(seconds=60)
        wait = max(1.0, (frees_at - timezone.now()).total_seconds())
        raise ClientError(
            "rate_limited",
            f"At most {minute_limit} @gpt requests a minute; "
            f"try again in {limits.wait_text(wait)}.",
            retry_after=wait,
        )
    # The daily token budget (GPT_DAILY_TOKENS_PER_USER), from the usage replies recorded.
    limits.gpt_budget_check(user=author)


# --- the reply's life: claim, append, finish, fail, cancel, retry ----------------


@transaction.atomic
def reply_claim(
    *, message_id: int, model: str, attempt: uuid.UUID | None = None
) -> uuid.UUID | None:
    """Take a pending reply for one streaming attempt: pending → streaming.

    Returns the attempt id every later write of this attempt must name, or None
    when the row is not pending (done, cancelled, or another attempt has it).
    A caller that names its ``attempt`` may send the claim again when its outcome
    is unknown (the connection broke around the commit): a row this attempt
    already holds is its own claim, returned as such.
    """
    attempt = attempt or uuid.uuid4()
    now = timezone.now()
    updated = Message.objects.filter(
        pk=message_id, role=Role.ASSISTANT, status=Status.PENDING
    ).update(
        status=Status.STREAMING,
        attempt=attempt,
        model=_clean_model_name(model),
        version=F("version") + 1,
        updated_at=now,
        heartbeat_at=now,
    )
    if not updated:
        mine = Message.objects.filter(pk=message_id, attempt=attempt, status=Status.STREAMING)
        return attempt if mine.exists() else None
    _broadcast_row(message_get(message_id=message_id))
    return attempt


_MESSAGES = Message._meta.db_table
_CHUNKS = ReplyChunk._meta.db_table

# The appends of many replies (at most one each) in one statement: one round trip,
# one commit. Each row moves from the version its writer holds to the next, so a
# statement sent twice (a retry after its result was lost) finds no row the second
# time and writes nothing twice. The text goes into a chunk row of its own: the
# message row changes only in small columns (its body, TOASTed once long, is not
# rewritten), so a write costs the same at any length of the reply. updated_at
# is left alone: it is indexed (a changed indexed column would rule out Postgres's
# in-page HOT update); a streaming run's liveness is its heartbeat.
_APPEND_MANY_SQL = f"""
WITH a (id, attempt, version, text) AS (VALUES {{values}}),
m AS (
    UPDATE {_MESSAGES} AS m
       SET version = m.version + 1,
           text_length = m.text_length + char_length(a.text),
           unfolded_length = m.unfolded_length + char_length(a.text)
      FROM a
     WHERE m.id = a.id AND m.attempt = a.attempt AND m.status = 'streaming'
       AND m.version = COALESCE(a.version, m.version)
 RETURNING m.id, m.version, m.text_length, m.room_id, m.unfolded_length, a.text
), c AS (
    INSERT INTO {_CHUNKS} (message_id, version, "offset", text)
    SELECT id, version, text_length - char_length(text), text FROM m
)
SELECT id, version, text_length, room_id, unfolded_length FROM m
"""  # noqa: S608 - the table names are ours, every value is a parameter

# Folding: the chunks of each row, in order, appended to its body at once (one
# rewrite of the body per GPT_FOLD_CHARS characters, not one per write), then
# deleted. The text a reader sees does not change, so neither does the version.
# unfolded_length drops by what was folded (not to 0): a chunk committed after
# this statement began stays, and is still counted.
_FOLD_SQL = f"""
WITH c AS (
    DELETE FROM {_CHUNKS} WHERE message_id = ANY(%s) RETURNING message_id, version, text
), t AS (
    SELECT message_id, string_agg(text, '' ORDER BY version) AS text FROM c GROUP BY message_id
)
UPDATE {_MESSAGES} AS m
   SET body = m.body || t.text, unfolded_length = m.unfolded_length - char_length(t.text)
  FROM t WHERE m.id = t.message_id
"""  # noqa: S608 - the table names are ours, every value is a parameter


def replies_fold(*, message_ids: list[int]) -> None:
    """Fold the chunks of these replies into their bodies (any status, any number)."""
    if message_ids:
        with connection.cursor() as cursor:
            cursor.execute(_FOLD_SQL, [list(message_ids)])


@dataclass(frozen=True)
class Appended:
    version: int
    offset: int


@dataclass(frozen=True)
class ReplyAppend:
    """One append of a streaming run: ``text`` after write number ``version`` of the row."""

    message_id: int
    attempt: uuid.UUID
    version: int
    text: str


def clean_model_text(text: str) -> str:
    """Text from the model as it can be stored: ``clean_text``, and no lone surrogates.

    A JSON string may escape half a surrogate pair (``"\\ud800"``); Python decodes
    it, but no UTF-8 (so no Postgres text) can hold it. A pair becomes its
    character; a lone half becomes U+FFFD, as the chunker makes it (visible, not
    silently dropped).
    """
    text = clean_text(text)
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def reply_append(
    *, message_id: int, attempt: uuid.UUID, text: str, version: int | None = None
) -> Appended | None:
    """Append ``text`` to a streaming reply and broadcast the delta.

    Returns None when the row is no longer this attempt's to write (cancelled,
    finished, taken over): the caller stops. With ``version`` (what the worker
    always names) the append is written only over that version of the row, so it
    is written at most once however often it is sent; a one-off write (the admin,
    tests) may leave it out, and is written over the row's current version. One
    statement, atomic on its own: in autocommit the delta is sent right after it
    commits, inside a caller's atomic block when that commits. The streaming runs
    of a worker write theirs in batches instead (``reply_appends_write``, from
    ``worker/appends.py``).
    """
    text = clean_model_text(text)
    if not text:
        return None if not _is_writable(message_id, attempt) else _current(message_id)
    written = _append_many([ReplyAppend(message_id, attempt, version, text)])  # type: ignore[arg-type]
    if message_id not in written:
        return None
    appended, room_id, event = _written(message_id, text, *written[message_id])
    transaction.on_commit(lambda: events.send_to_room(room_id, event))
    return appended


def _append_many(appends: list[ReplyAppend]) -> dict[int, tuple[int, int, int]]:
    """Write ``appends`` (each with text; a version of None: over the row's current
    one) in one statement, then fold the rows whose chunks reached GPT_FOLD_CHARS;
    {message id: (version, length, room id)} written.

    The fold is a statement of its own, atomic alone: if it never runs (the
    process died), the chunks stay where they are, read with the row, and the
    next fold or the reply's end takes them."""
    values = ", ".join(["(%s::bigint, %s::uuid, %s::integer, %s::text)"] * len(appends))
    params: list[Any] = []
    for a in appends:
        params += [a.message_id, a.attempt, a.version, a.text]
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_MANY_SQL.format(values=values), params)
        rows = cursor.fetchall()
    replies_fold(message_ids=[row[0] for row in rows if row[4] >= settings.GPT_FOLD_CHARS])
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def reply_appends_write(*, appends: list[ReplyAppend]) -> list[Appended | None]:
    """Write the appends of several streaming replies (at most one each) exactly once,
    in one statement, and publish their deltas after it commits.

    Returns, for each, what it wrote (``Appended``), or None when the row is no
    longer that attempt's (cancelled, finished, taken over). Safe to call again
    with the same appends when a call's outcome is unknown (the connection broke
    after the commit, publishing raised): an append the row already holds is
    found by its version, reported as written and published again (clients drop
    a delta whose version they hold), never written twice. Runs outside any
    transaction (``reply_append`` is the one for a caller's atomic block).
    """
    appends = [replace(a, text=clean_model_text(a.text)) for a in appends]
    to_write = [a for a in appends if a.text]
    written: dict[int, tuple[int, int, int]] = {}
    if to_write:
        written = _append_many(to_write)
    missing = [a.message_id for a in appends if a.message_id not in written]
    current = (
        {
            row[0]: row[1:]
            for row in Message.objects.filter(pk__in=missing).values_list(
                "pk", "attempt", "status", "version", "text_length", "room_id"
            )
        }
        if missing
        else {}
    )
    results: list[Appended | None] = []
    published: list[tuple[int, dict[str, Any]]] = []
    for a in appends:
        if a.message_id in written:
            appended, room_id, event = _written(a.message_id, a.text, *written[a.message_id])
        else:
            found = _already_written(a, current.get(a.message_id))
            if found is None:
                results.append(None)
                continue
            appended, room_id, event = found
        results.append(appended)
        if event is not None:
            published.append((room_id, event))
    try:
        events.send_to_rooms(published)
    except Exception:
        # The text is committed: a client that misses a delta repairs the gap by
        # resyncing. Raising would make the caller send the appends again.
        logger.exception("could not publish %s deltas", len(published))
    return results


def _already_written(
    append: ReplyAppend, row: tuple[Any, ...] | None
) -> tuple[Appended, int, dict[str, Any] | None] | None:
    """An append the statement did not write, as the row tells: written before (its
    version is the next one), nothing to write (empty), or None: not ours any more."""
    if row is None:
        return None
    attempt, status, version, length, room_id = row
    if attempt != append.attempt or status != Status.STREAMING:
        return None
    if not append.text and version == append.version:
        return Appended(version=version, offset=length), room_id, None
    if append.text and version == append.version + 1:
        return _written(append.message_id, append.text, version, length, room_id)
    return None


def _written(
    message_id: int, text: str, version: int, length: int, room_id: int
) -> tuple[Appended, int, dict[str, Any]]:
    """An append the UPDATE wrote (its RETURNING row): the result, the room, the delta."""
    offset = length - len(text)
    event = events.delta_event(message_id=message_id, version=version, offset=offset, text=text)
    return Appended(version=version, offset=offset), room_id, event


def _is_writable(message_id: int, attempt: uuid.UUID) -> bool:
    return Message.objects.filter(pk=message_id, attempt=attempt, status=Status.STREAMING).exists()


def _current(message_id: int) -> Appended:
    message = Message.objects.only("version", "text_length").get(pk=message_id)
    return Appended(version=message.version, offset=message.text_length)


def _close_reply(
    *, message_id: int, attempt: uuid.UUID | None, status: Status, **fields: Any
) -> Message | None:
    rows = Message.objects.filter(pk=message_id, role=Role.ASSISTANT, status__in=OPEN_STATUSES)
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    now = timezone.now()
    if not rows.update(
        status=status, version=F("version") + 1, updated_at=now, finished_at=now, **fields
    ):
        return None
    # An ended reply holds all its text in its body (its chunks: none after this).
    replies_fold(message_ids=[message_id])
    message = message_get(message_id=message_id)
    _broadcast_row(message)
    return message


# What the model reports is stored only once checked: PositiveIntegerField holds
# 0..2**31-1, the model name has a maximum length, text no NUL or lone surrogate.
_MAX_TOKENS_FIGURE = 2**31 - 1
_MAX_ERROR_LENGTH = 2000


def _clean_model_name(model: Any) -> str:
    if not isinstance(model, str):
        return ""
    name = " ".join(clean_model_text(model).split())
    return name[: Message._meta.get_field("model").max_length]


def _clean_token_count(value: Any) -> int | None:
    """A usage figure as it can be stored: a whole number, at most 2**31-1; None for
    anything else (negative, fractional, text, true/false)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    if value < 0:
        return None
    return min(int(value), _MAX_TOKENS_FIGURE)


def clean_usage(usage: Any) -> dict[str, int | None]:
    """The model's ``usage`` object reduced to the three figures we keep, each checked."""
    usage = usage if isinstance(usage, dict) else {}
    return {
        key: _clean_token_count(usage.get(key))
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


@transaction.atomic
def reply_finish(
    *, message_id: int, attempt: uuid.UUID, model: Any = "", usage: Any = None
) -> Message | None:
    """Mark a streamed reply done, with the model that wrote it and its token usage.

    Both come from the model and are cleaned first (``_clean_model_name``,
    ``clean_usage``): an odd value is dropped, never a reason to fail.
    """
    fields: dict[str, Any] = clean_usage(usage)
    model = _clean_model_name(model)
    if model:
        fields["model"] = model
    return _close_reply(message_id=message_id, attempt=attempt, status=Status.DONE, **fields)


@transaction.atomic
def reply_fail(*, message_id: int, attempt: uuid.UUID | None, error: Any) -> Message | None:
    """Mark an open reply failed with a readable reason; its partial text stays."""
    error = clean_model_text(error if isinstance(error, str) else "")[:_MAX_ERROR_LENGTH]
    error = error.strip() or "The reply failed."
    return _close_reply(message_id=message_id, attempt=attempt, status=Status.FAILED, error=error)


def replies_heartbeat(*, runs: list[tuple[int, uuid.UUID]]) -> int:
    """Record that the runs ``(message id, attempt)`` are alive: ``heartbeat_at = now``.

    One UPDATE for all of them. Not a change anyone sees (the watchdog reads it):
    no version, no broadcast. Returns the rows written (streaming ones only).
    """
    if not runs:
        return 0
    alive = Q()
    for message_id, attempt in runs:
        alive |= Q(pk=message_id, attempt=attempt)
    return Message.objects.filter(alive, status=Status.STREAMING).update(
        heartbeat_at=timezone.now()
    )


@transaction.atomic
def reply_cancel(*, room: Room, message_id: Any, actor: User | None = None) -> Message:
    """Stop an open reply in ``room`` for everyone; the text so far stays.

    ``actor`` is who asks (``permissions.can_cancel_reply``: the asker, the
    room's owners and moderators, staff); None only for the system itself
    (the worker's own stops, tests). The worker learns of it when its next
    guarded append touches no row.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("reply_to")
        .filter(pk=message_id, room=room, role=Role.ASSISTANT)
        .first()
    )
    if message is None:
        raise ClientError("not_found", f"There is no reply {message_id} in this room.")
    if actor is not None:
        role = permissions.role_of(actor, room)
        if not permissions.can_read(actor, room, role):
            raise ClientError("not_member", "You are not a member of this room.")
        if not permissions.can_cancel_reply(actor, room, role, message):
            raise ClientError(
                "forbidden",
                "Only the member who asked, the room's owners and moderators can stop this reply.",
            )
    if message.status not in OPEN_STATUSES:
        raise ClientError("not_streaming", f"Reply {message_id} is already {message.status}.")
    closed = _close_reply(message_id=message.pk, attempt=None, status=Status.CANCELLED)
    assert closed is not None  # noqa: S101 - the row is locked and open
    transaction.on_commit(lambda: events.announce_cancel(message.pk))
    return closed


def replies_fail_stale(*, stale_after: timedelta, queue_timeout: timedelta) -> list[int]:
    """The watchdog: mark failed the open replies that no worker is running.

    - streaming, with no heartbeat for ``stale_after``: its worker stopped
      ("interrupted"); the partial text stays.
    - pending for longer than ``queue_timeout``: no worker started it (the queue
      was that long, or its task was lost), and the message says so. A reply
      waiting behind busy threads is failed only past that timeout.

    Every socket gets the final row. Rows another transaction holds are skipped
    (their owner is alive); each row is closed in its own transaction.
    """
    now = timezone.now()
    streaming = Q(status=Status.STREAMING) & (
        Q(heartbeat_at__lt=now - stale_after)
        | Q(heartbeat_at__isnull=True, updated_at__lt=now - stale_after)
    )
    queued = Q(status=Status.PENDING, updated_at__lt=now - queue_timeout)
    stale = Message.objects.filter(streaming | queued, role=Role.ASSISTANT)
    failed = []
    for message_id in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            row = stale.select_for_update(skip_locked=True).filter(pk=message_id).first()
            if row is None:
                continue
            if row.status == Status.STREAMING:
                error = "The reply was interrupted (its worker stopped) and did not finish."
            else:
                waited = queue_timeout.total_seconds()
                error = (
                    f"The reply waited more than {waited:g} seconds in the queue and no worker "
                    "started it; ask again."
                )
            if _close_reply(message_id=row.pk, attempt=None, status=Status.FAILED, error=error):
                failed.append(row.pk)
    return failed


@transaction.atomic
def reply_regenerate(*, message_id: Any, actor: User | None, room: Room | None = None) -> Message:
    """Make a finished, failed or cancelled reply again: same row, a new attempt.

    The attempt it held is kept as a ``ReplyRevision`` (numbered after the
    earlier ones); the row goes back to pending with no text, no usage and no
    attempt (its next claim gives it a new one), and is queued again. ``room``,
    when given, is the only room the id is looked up in (the socket's).
    ``actor`` must be allowed (``permissions.can_regenerate``); None is the
    system. The asker's @gpt limits apply as to a new reply (it costs tokens),
    except for staff and the system; past ``GPT_MAX_REVISIONS`` earlier
    attempts it is refused (``too_many_revisions``), so no text is dropped.
    A refused regenerate changes nothing.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    rows = (
        Message.objects.select_for_update(of=("self",))
        .select_related("reply_to__author", "room")
        .filter(pk=message_id)
    )
    if room is not None:
        rows = rows.filter(room=room)
    message = rows.first()
    if message is None:
        where = " in this room" if room is not None else ""
        raise ClientError("not_found", f"There is no reply {message_id}{where}.")
    role = None
    if actor is not None:
        role = permissions.role_of(actor, message.room)
        if not permissions.can_read(actor, message.room, role):
            raise ClientError("not_member", "You are not a member of this room.")
    if message.role != Role.ASSISTANT:
        raise ClientError(
            "not_a_reply",
            f"Message {message_id} is not a reply: only the assistant's replies can be "
            "regenerated.",
        )
    if actor is not None and not permissions.can_regenerate(actor, message.room, role, message):
        raise ClientError(
            "forbidden",
            "Only the member who asked, the room's owners and moderators can regenerate "
            "this reply.",
        )
    if message.deleted_at is not None:
        raise ClientError("already_deleted", f"Message {message_id} is deleted.")
    if message.status in OPEN_STATUSES:
        raise ClientError("not_retryable", f"Reply {message_id} is {message.status}.")
    limit = settings.GPT_MAX_REVISIONS
    if message.revision_count >= limit:
        raise ClientError(
            "too_many_revisions",
            f"Reply {message_id} was already regenerated {message.revision_count} times, "
            f"the most this site keeps (GPT_MAX_REVISIONS={limit}); ask again in a new message.",
        )
    asker = message.reply_to.author if message.reply_to is not None else None
    if asker is not None and actor is not None and not permissions.is_staff(actor):
        try:
            _check_reply_limits(asker)
        except ClientError as error:
            if asker.pk == actor.pk:
                raise
            raise ClientError(
                error.code,
                f"The reply is counted against {asker.get_display_name()}'s @gpt limits: "
                f"{error.detail}",
                retry_after=error.retry_after,
            ) from None
    replies_fold(message_ids=[message.pk])  # none: a closed reply is folded already
    current = message_get(message_id=message.pk)
    now = timezone.now()
    ReplyRevision.objects.create(
        message=current,
        number=current.revision_count + 1,
        text=message_text(current),
        status=current.status,
        model=current.model,
        error=current.error,
        prompt_tokens=current.prompt_tokens,
        completion_tokens=current.completion_tokens,
        total_tokens=current.total_tokens,
        requested_at=current.requested_at or current.created_at,
        finished_at=current.finished_at,
        replaced_by=actor,
    )
    Message.objects.filter(pk=message.pk).update(
        status=Status.PENDING,
        body="",
        text_length=0,
        unfolded_length=0,
        error="",
        model="",
        attempt=None,
        heartbeat_at=None,
        finished_at=None,
        prompt_tokens=None,
        completion_tokens=None,
        total_tokens=None,
        requested_at=now,
        revision_count=F("revision_count") + 1,
        version=F("version") + 1,
        updated_at=now,
    )
    ReplyChunk.objects.filter(message_id=message.pk).delete()
    message = message_get(message_id=message.pk)
    _broadcast_row(message)
    _enqueue_reply(message.pk)
    return message
