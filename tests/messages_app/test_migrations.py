"""Migration 0002_rooms_membership on a real Postgres database holding rooms and messages."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("messages_app", "0002_message_heartbeat")]
AFTER = [("messages_app", "0002_rooms_membership")]


def migrate(executor: MigrationExecutor, target: list[tuple[str, str]]) -> Any:
    executor.loader.build_graph()
    executor.migrate(target)
    return MigrationExecutor(connection).loader.project_state(target).apps


def test_migration_0002_makes_rooms_public_with_creator_owner_and_posters_members(
    executor: MigrationExecutor,
) -> None:
    old = migrate(executor, BEFORE)
    User = old.get_model("messages_app", "User")
    Room = old.get_model("messages_app", "Room")
    Message = old.get_model("messages_app", "Message")
    ann = User.objects.create(username="ann")
    ben = User.objects.create(username="ben")
    cy = User.objects.create(username="cy")
    owned = Room.objects.create(name="Owned", slug="owned", created_by=ann)
    orphan = Room.objects.create(name="Orphan", slug="orphan", created_by=None)
    for author, body in [(ann, "hi"), (ben, "yo"), (ben, "again"), (None, "a reply")]:
        Message.objects.create(
            room=owned, author=author, role="assistant" if author is None else "user", body=body
        )
    Message.objects.create(room=orphan, author=cy, body="alone")
    before = list(Message.objects.order_by("id").values_list("id", "room_id", "body", "version"))

    new = migrate(executor, AFTER)
    Room = new.get_model("messages_app", "Room")
    Message = new.get_model("messages_app", "Message")
    Membership = new.get_model("messages_app", "Membership")
    assert set(Room.objects.values_list("slug", "visibility")) == {
        ("owned", "public"),
        ("orphan", "public"),
    }
    assert set(Membership.objects.values_list("room__slug", "user__username", "role")) == {
        ("owned", "ann", "owner"),
        ("owned", "ben", "member"),
        ("orphan", "cy", "member"),
    }
    after = list(Message.objects.order_by("id").values_list("id", "room_id", "body", "version"))
    assert after == before
    assert not Message.objects.filter(deleted_at__isnull=False).exists()
    assert set(Room.objects.values_list("invite_token", flat=True)) == {None}


def test_migration_0002_on_an_empty_database_creates_no_membership(
    executor: MigrationExecutor,
) -> None:
    migrate(executor, BEFORE)
    new = migrate(executor, AFTER)
    assert new.get_model("messages_app", "Membership").objects.count() == 0
