"""Rooms and who is in them: creating and deleting rooms, the room's assistant
settings, memberships and roles, invite links, read positions."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from messages_app import events, permissions, protocol
from messages_app.models import MemberRole, Membership, Message, Room, User, Visibility
from messages_app.protocol import ClientError
from messages_app.selectors import member_list
from messages_app.services.common import _check_text, clean_text, has_lone_surrogate

logger = logging.getLogger(__name__)


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
