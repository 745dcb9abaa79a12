"""Migration ``assistants`` on a real Postgres database holding replies."""

from __future__ import annotations

import pytest
from django.db.migrations.executor import MigrationExecutor

from tests.messages_app.test_migrations import migrate

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("messages_app", "0005_edits")]


def after_assistants(executor: MigrationExecutor) -> list[tuple[str, str]]:
    executor.loader.build_graph()
    (name,) = [
        key[1]
        for key in executor.loader.graph.nodes
        if key[0] == "messages_app" and key[1].endswith("_assistants")
    ]
    return [("messages_app", name)]


def test_migration_assistants_makes_gpt_and_gives_it_every_earlier_reply(
    executor: MigrationExecutor,
) -> None:
    target = after_assistants(executor)
    old = migrate(executor, BEFORE)
    User = old.get_model("messages_app", "User")
    Room = old.get_model("messages_app", "Room")
    Message = old.get_model("messages_app", "Message")
    ann = User.objects.create(username="ann")
    room = Room.objects.create(name="Old", slug="old")
    question = Message.objects.create(room=room, author=ann, body="@gpt hi")
    answer = Message.objects.create(room=room, role="assistant", body="hello", reply_to=question)

    new = migrate(executor, target)
    Assistant = new.get_model("messages_app", "Assistant")
    Message = new.get_model("messages_app", "Message")
    Room = new.get_model("messages_app", "Room")
    gpt = Assistant.objects.get()
    assert (gpt.handle, gpt.name, gpt.model, gpt.base_url, gpt.api_key_env, gpt.active) == (
        "gpt",
        "GPT",
        "",
        "",
        "",
        True,
    )
    assert Message.objects.get(pk=answer.pk).assistant_id == gpt.pk
    assert Message.objects.get(pk=question.pk).assistant_id is None
    old_room = Room.objects.get(pk=room.pk)
    assert (old_room.assistant_instructions, old_room.context_messages) == ("", None)
