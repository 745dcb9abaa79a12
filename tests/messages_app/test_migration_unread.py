"""Migration ``unread`` (issue 14) on a real Postgres database holding rooms, members
and messages: existing members start with their rooms read."""

from __future__ import annotations

import pytest
from django.db.migrations.executor import MigrationExecutor

from tests.messages_app.test_migrations import migrate

pytestmark = pytest.mark.django_db(transaction=True)

# The lead renumbers migrations at merge time: these name this branch's.
BEFORE = [("messages_app", "0006_assistants")]
AFTER = [("messages_app", "0007_unread")]


def test_migration_unread_starts_existing_members_at_their_rooms_newest_message(
    executor: MigrationExecutor,
) -> None:
    old = migrate(executor, BEFORE)
    User = old.get_model("messages_app", "User")
    Room = old.get_model("messages_app", "Room")
    Message = old.get_model("messages_app", "Message")
    Membership = old.get_model("messages_app", "Membership")
    ann = User.objects.create(username="ann")
    ben = User.objects.create(username="ben")
    busy = Room.objects.create(name="Busy", slug="busy")
    empty = Room.objects.create(name="Empty", slug="empty")
    for room, user in [(busy, ann), (busy, ben), (empty, ann)]:
        Membership.objects.create(room=room, user=user, role="member")
    newest = [Message.objects.create(room=busy, author=ben, body=f"m{n}").pk for n in range(3)][-1]

    new = migrate(executor, AFTER)
    Membership = new.get_model("messages_app", "Membership")
    assert set(Membership.objects.values_list("room__slug", "user__username", "last_read_id")) == {
        ("busy", "ann", newest),
        ("busy", "ben", newest),
        ("empty", "ann", 0),
    }
