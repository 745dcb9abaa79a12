"""Who may do what in a room: one function per action, and nothing else decides.

Views, the consumer, the admin and the services all ask these functions (see
docs/architecture.md, "Rooms and permissions"). Each takes the acting user and
their role in the room (``role_of``; ``None`` for a non-member), plus what the
action is about, and answers True or False without touching the database, so
a caller that already holds the role (a locked membership row, say) asks for
free, and the table test in tests/messages_app/test_permissions.py covers each.

Staff (an active ``is_staff`` user) may do everything a room's owner may, in any
room, without being a member. An inactive user may do nothing.
"""

from __future__ import annotations

from typing import Any

from messages_app.models import MemberRole, Membership, Message, Room, Visibility

MANAGERS = frozenset({MemberRole.OWNER, MemberRole.MODERATOR})


def role_of(user: Any, room: Room) -> str | None:
    """``user``'s role in ``room`` (one query), or None when not a member."""
    if user is None or not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(room=room, user_id=user.pk).values_list("role", flat=True).first()
    )


def is_staff(user: Any) -> bool:
    return bool(user is not None and user.is_active and user.is_staff)


def _active(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def can_see_room(user: Any, room: Room, role: str | None) -> bool:
    """Whether the room exists for ``user`` at all: else pages 404 and sockets 4404."""
    if not _active(user):
        return False
    return role is not None or is_staff(user) or room.visibility == Visibility.PUBLIC


def can_join(user: Any, room: Room, role: str | None) -> bool:
    """Joining without an invite: only a public room, by opening it."""
    return _active(user) and role is None and room.visibility == Visibility.PUBLIC


def can_join_by_invite(user: Any, room: Room, role: str | None) -> bool:
    """Joining with a valid invite link (the service checks the token): any room."""
    return _active(user) and role is None


def can_read(user: Any, room: Room, role: str | None) -> bool:
    """Reading the room's messages (page, snapshot, live frames): members and staff."""
    return _active(user) and (role is not None or is_staff(user))


def can_post(user: Any, room: Room, role: str | None) -> bool:
    """Posting a message (and asking @gpt): members and staff."""
    return can_read(user, room, role)


def can_type(user: Any, room: Room, role: str | None) -> bool:
    """Saying "is typing" (the typing frame): whoever may post."""
    return can_post(user, room, role)


def can_mark_read(user: Any, room: Room, role: str | None) -> bool:
    """Keeping a read position (the read frame): members, whose membership holds it."""
    return _active(user) and role is not None


def can_cancel_reply(user: Any, room: Room, role: str | None, reply: Message) -> bool:
    """Stopping a reply: the member who asked for it, the room's owners and moderators, staff."""
    if not _active(user):
        return False
    if is_staff(user) or role in MANAGERS:
        return True
    asker_id = reply.reply_to.author_id if reply.reply_to_id and reply.reply_to else None
    return role is not None and asker_id is not None and asker_id == user.pk


def can_regenerate(user: Any, room: Room, role: str | None, reply: Message) -> bool:
    """Regenerating a reply: the member who asked for it, the room's owners and
    moderators, staff (as stopping it). Whether it may be regenerated now (its
    status, deleted, the limits) is the service's to say."""
    return can_cancel_reply(user, room, role, reply)


def can_delete_message(user: Any, room: Room, role: str | None, message: Message) -> bool:
    """Deleting a message: its author (while a member), owners and moderators, staff."""
    if not _active(user):
        return False
    if is_staff(user) or role in MANAGERS:
        return True
    return role is not None and message.author_id is not None and message.author_id == user.pk


def can_edit(user: Any, room: Room, role: str | None, message: Message) -> bool:
    """Editing a message's text: its author only (while they may post), never a reply.

    Not owners, moderators or staff either: an edit speaks in the author's name.
    Whether the row can still change (deleted) is the service's to say.
    """
    return (
        can_post(user, room, role)
        and message.role == "user"
        and message.author_id is not None
        and message.author_id == user.pk
    )


def can_invite(user: Any, room: Room, role: str | None) -> bool:
    """Seeing, making and revoking the room's invite link: owners, moderators, staff."""
    return _active(user) and (is_staff(user) or role in MANAGERS)


def can_manage_roles(user: Any, room: Room, role: str | None) -> bool:
    """Promoting to moderator or owner, and demoting: owners and staff."""
    return _active(user) and (is_staff(user) or role == MemberRole.OWNER)


def can_remove_member(user: Any, room: Room, role: str | None, target_role: str | None) -> bool:
    """Removing another member: owners (anyone), moderators (plain members only), staff.

    The last-owner rule is the service's: it needs the other rows, locked.
    """
    if not _active(user) or target_role is None:
        return False
    if is_staff(user) or role == MemberRole.OWNER:
        return True
    return role == MemberRole.MODERATOR and target_role == MemberRole.MEMBER


def can_leave(user: Any, room: Room, role: str | None) -> bool:
    """Leaving: any member (the last owner hands ownership over first: the service checks)."""
    return _active(user) and role is not None


def can_manage_room(user: Any, room: Room, role: str | None) -> bool:
    """Changing the room itself (visibility, name) and deleting it: owners and staff."""
    return _active(user) and (is_staff(user) or role == MemberRole.OWNER)


def can_configure_assistants(user: Any, room: Room, role: str | None) -> bool:
    """Setting the room's own instructions for its assistants, its default
    granularity and how much recent talk the model sees: owners, moderators, staff."""
    return _active(user) and (is_staff(user) or role in MANAGERS)


def can_admin(user: Any) -> bool:
    """The admin site: staff only (Django's own ``is_staff`` check, named here too)."""
    return is_staff(user)
