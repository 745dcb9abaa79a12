"""The permission table: every role × every action (messages_app.permissions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from messages_app import permissions
from messages_app.models import MemberRole, Membership, Message, Role, Room, User, Visibility

pytestmark = pytest.mark.django_db

# Who acts: a name, their role in the room (None: not a member), whether staff.
ACTORS: dict[str, tuple[str | None, bool]] = {
    "owner": (MemberRole.OWNER, False),
    "moderator": (MemberRole.MODERATOR, False),
    "member": (MemberRole.MEMBER, False),
    "asker": (MemberRole.MEMBER, False),  # asked for the reply
    "author": (MemberRole.MEMBER, False),  # wrote the message
    "non-member": (None, False),
    "staff": (None, True),
}

# Each action, as a call of the actor (and the objects it is about).
Call = Callable[[User, Room, "str | None", dict[str, Any]], bool]
ACTIONS: dict[str, Call] = {
    "see": lambda u, r, role, o: permissions.can_see_room(u, r, role),
    "read": lambda u, r, role, o: permissions.can_read(u, r, role),
    "post": lambda u, r, role, o: permissions.can_post(u, r, role),
    "cancel": lambda u, r, role, o: permissions.can_cancel_reply(u, r, role, o["reply"]),
    "delete": lambda u, r, role, o: permissions.can_delete_message(u, r, role, o["message"]),
    "regenerate": lambda u, r, role, o: permissions.can_regenerate(u, r, role, o["reply"]),
    "invite": lambda u, r, role, o: permissions.can_invite(u, r, role),
    "manage_roles": lambda u, r, role, o: permissions.can_manage_roles(u, r, role),
    "remove_member": lambda u, r, role, o: permissions.can_remove_member(
        u, r, role, MemberRole.MEMBER
    ),
    "remove_moderator": lambda u, r, role, o: permissions.can_remove_member(
        u, r, role, MemberRole.MODERATOR
    ),
    "remove_owner": lambda u, r, role, o: permissions.can_remove_member(
        u, r, role, MemberRole.OWNER
    ),
    "leave": lambda u, r, role, o: permissions.can_leave(u, r, role),
    "join": lambda u, r, role, o: permissions.can_join(u, r, role),
    "manage_room": lambda u, r, role, o: permissions.can_manage_room(u, r, role),
    "admin": lambda u, r, role, o: permissions.can_admin(u),
    "type": lambda u, r, role, o: permissions.can_type(u, r, role),
    "mark_read": lambda u, r, role, o: permissions.can_mark_read(u, r, role),
}

Y, N = True, False
# In a private room. Columns in ACTIONS order.
PRIVATE: dict[str, tuple[bool, ...]] = {
    # see read post cancel delete regen invite roles rm_mem rm_mod rm_own leave join room admin
    # type mark_read
    "owner": (Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, N, Y, N, Y, Y),
    "moderator": (Y, Y, Y, Y, Y, Y, Y, N, Y, N, N, Y, N, N, N, Y, Y),
    "member": (Y, Y, Y, N, N, N, N, N, N, N, N, Y, N, N, N, Y, Y),
    "asker": (Y, Y, Y, Y, N, Y, N, N, N, N, N, Y, N, N, N, Y, Y),
    "author": (Y, Y, Y, N, Y, N, N, N, N, N, N, Y, N, N, N, Y, Y),
    "non-member": (N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N),
    # staff who are not members have no read position to keep
    "staff": (Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, N, N, Y, Y, Y, N),
}
# A public room differs only in who can find and join it.
PUBLIC = {name: list(row) for name, row in PRIVATE.items()}
PUBLIC["non-member"][0] = Y  # see (opening it joins)
PUBLIC["non-member"][12] = Y  # join
PUBLIC["staff"][12] = Y  # staff may join a public room too, like anyone


def _setup(visibility: str) -> tuple[Room, dict[str, User], dict[str, Any]]:
    users = {
        name: User.objects.create_user(username=name.replace("-", ""), is_staff=staff)
        for name, (_role, staff) in ACTORS.items()
    }
    room = Room.objects.create(name="R", slug="r", visibility=visibility)
    for name, (role, _staff) in ACTORS.items():
        if role is not None:
            Membership.objects.create(room=room, user=users[name], role=role)
    question = Message.objects.create(room=room, author=users["asker"], body="@gpt hi")
    reply = Message.objects.create(
        room=room, role=Role.ASSISTANT, status="streaming", reply_to=question
    )
    message = Message.objects.create(room=room, author=users["author"], body="mine")
    return room, users, {"reply": reply, "message": message}


@pytest.mark.parametrize(
    ("visibility", "table"), [(Visibility.PRIVATE, PRIVATE), (Visibility.PUBLIC, PUBLIC)]
)
def test_permissions_table_of_every_role_and_action(visibility: str, table: dict[str, Any]) -> None:
    room, users, objects = _setup(visibility)
    got = {
        name: tuple(
            call(users[name], room, permissions.role_of(users[name], room), objects)
            for call in ACTIONS.values()
        )
        for name in ACTORS
    }
    expected = {name: tuple(row) for name, row in table.items()}
    mismatches = {
        (name, action): (got[name][i], expected[name][i])
        for name in ACTORS
        for i, action in enumerate(ACTIONS)
        if got[name][i] != expected[name][i]
    }
    assert mismatches == {}


def test_permissions_refuse_everything_to_an_inactive_owner_or_staff() -> None:
    room, users, objects = _setup(Visibility.PUBLIC)
    for name in ("owner", "staff"):
        user = users[name]
        user.is_active = False
        role = permissions.role_of(user, room)
        assert [call(user, room, role, objects) for call in ACTIONS.values()] == [False] * len(
            ACTIONS
        ), name


def test_permissions_role_of_is_none_for_signed_out_visitors() -> None:
    from django.contrib.auth.models import AnonymousUser

    room, _users, _objects = _setup(Visibility.PUBLIC)
    assert permissions.role_of(AnonymousUser(), room) is None
    assert not permissions.can_see_room(AnonymousUser(), room, None)


# Editing (issue 14), a table of its own: the author's message, the asker's question
# and the assistant's reply, per actor. Only a message's author may edit it, never a
# reply; not owners, moderators or staff (an edit speaks in the author's name).
EDIT_TABLE: dict[str, tuple[bool, bool, bool]] = {
    # author's message, asker's question, the reply
    "owner": (N, N, N),
    "moderator": (N, N, N),
    "member": (N, N, N),
    "asker": (N, Y, N),
    "author": (Y, N, N),
    "non-member": (N, N, N),
    "staff": (N, N, N),
}


@pytest.mark.parametrize("visibility", [Visibility.PRIVATE, Visibility.PUBLIC])
def test_permissions_can_edit_table(visibility: str) -> None:
    room, users, objects = _setup(visibility)
    question = objects["reply"].reply_to
    got = {
        name: tuple(
            permissions.can_edit(users[name], room, permissions.role_of(users[name], room), m)
            for m in (objects["message"], question, objects["reply"])
        )
        for name in ACTORS
    }
    assert got == EDIT_TABLE


def test_permissions_can_edit_refuses_an_inactive_author() -> None:
    room, users, objects = _setup(Visibility.PUBLIC)
    author = users["author"]
    author.is_active = False
    assert not permissions.can_edit(
        author, room, permissions.role_of(author, room), objects["message"]
    )
