"""A streaming reply's text in chunk rows, folded into its body (issue 12, point 1).

The database is the truth: body plus chunks. These tests check, on the real
Postgres, that every read sees exactly the text written so far (a snapshot, the
payload, the admin), that folding changes nothing a reader sees, that an ended
reply holds all its text in its body, and (as a property, for random texts cut
at random points, with random fold sizes) that folding chunks equals
concatenating them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages_app import events, services
from messages_app.models import Message, ReplyChunk, Room, Status, User
from messages_app.selectors import message_payload, message_text, room_snapshot, with_text
from tests.rows import stored

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broadcast(monkeypatch: pytest.MonkeyPatch) -> None:
    # Frames are the realtime layer's business; here only rows are read.
    monkeypatch.setattr(events, "send_to_room", lambda room_id, event: None)
    monkeypatch.setattr(events, "send_to_rooms", lambda published: None)
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)


def streaming_reply(room: Room, author: User) -> tuple[Message, uuid.UUID]:
    reply = services.message_post(room=room, author=author, body="@gpt go").reply
    assert reply is not None
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    return reply, attempt


def append(reply: Message, attempt: uuid.UUID, text: str) -> services.Appended | None:
    version = Message.objects.get(pk=reply.pk).version
    (written,) = services.reply_appends_write(
        appends=[services.ReplyAppend(reply.pk, attempt, version, text)]
    )
    return written


def chunk_texts(reply: Message) -> list[str]:
    return list(ReplyChunk.objects.filter(message=reply).values_list("text", flat=True))


@override_settings(GPT_FOLD_CHARS=10)
def test_appends_go_to_chunks_and_fold_into_the_body_every_few_characters(
    room: Room, alice: User
) -> None:
    reply, attempt = streaming_reply(room, alice)
    append(reply, attempt, "abc")
    append(reply, attempt, "def")
    row = Message.objects.get(pk=reply.pk)
    assert (row.body, chunk_texts(reply), row.text_length) == ("", ["abc", "def"], 6)
    assert stored(reply.pk).body == "abcdef"
    append(reply, attempt, "ghij")  # 10 unfolded characters: folded
    row = Message.objects.get(pk=reply.pk)
    assert (row.body, chunk_texts(reply), row.unfolded_length) == ("abcdefghij", [], 0)
    append(reply, attempt, "k")
    assert stored(reply.pk).body == "abcdefghijk"
    assert [c.offset for c in ReplyChunk.objects.filter(message=reply)] == [10]


def test_a_fold_changes_neither_the_text_nor_the_version(room: Room, alice: User) -> None:
    reply, attempt = streaming_reply(room, alice)
    append(reply, attempt, "Hello, ")
    append(reply, attempt, "wörld 👍🏽")
    rows = with_text(Message.objects.select_related("room", "author"))
    before = message_payload(rows.get(pk=reply.pk))
    services.replies_fold(message_ids=[reply.pk])
    after = message_payload(rows.get(pk=reply.pk))
    assert before["body"] == "Hello, wörld 👍🏽"
    assert (after["body"], after["version"]) == (before["body"], before["version"])
    assert chunk_texts(reply) == []


@pytest.mark.parametrize("end", ["finish", "fail", "cancel"])
def test_an_ended_reply_holds_all_its_text_in_its_body(room: Room, alice: User, end: str) -> None:
    reply, attempt = streaming_reply(room, alice)
    for piece in ("one ", "two ", "three"):
        append(reply, attempt, piece)
    if end == "finish":
        services.reply_finish(message_id=reply.pk, attempt=attempt, model="m")
    elif end == "fail":
        services.reply_fail(message_id=reply.pk, attempt=attempt, error="boom")
    else:
        services.reply_cancel(room=room, message_id=reply.pk)
    row = Message.objects.get(pk=reply.pk)
    assert row.status != Status.STREAMING
    assert (row.body, row.text_length, row.unfolded_length) == ("one two three", 13, 0)
    assert chunk_texts(reply) == []
    # and nothing more is appended to it, chunk or body
    assert append(reply, attempt, " more") is None
    assert stored(reply.pk).body == "one two three" and chunk_texts(reply) == []


def test_an_append_of_another_attempt_writes_no_chunk(room: Room, alice: User) -> None:
    reply, attempt = streaming_reply(room, alice)
    append(reply, attempt, "mine")
    assert append(reply, uuid.uuid4(), "theirs") is None
    assert chunk_texts(reply) == ["mine"]


def test_a_retried_reply_starts_from_no_text(room: Room, alice: User) -> None:
    reply, attempt = streaming_reply(room, alice)
    append(reply, attempt, "partial")
    services.reply_cancel(room=room, message_id=reply.pk)
    services.reply_regenerate(message_id=reply.pk, actor=None)
    row = stored(reply.pk)
    assert (row.status, row.body, row.text_length, chunk_texts(reply)) == ("pending", "", 0, [])


def test_a_snapshot_holds_exactly_the_text_so_far_and_the_row_version(
    room: Room, alice: User
) -> None:
    reply, attempt = streaming_reply(room, alice)
    for piece in ("a", "b", "c"):
        append(reply, attempt, piece)
    (row,) = [m for m in room_snapshot(room=room) if m["id"] == reply.pk]
    assert (row["body"], row["version"], row["status"]) == ("abc", 5, "streaming")


def test_the_admin_shows_a_streaming_reply_s_live_text(
    admin_client: Client, room: Room, alice: User
) -> None:
    reply, attempt = streaming_reply(room, alice)
    append(reply, attempt, "Once upon ")
    append(reply, attempt, "a <time>")
    page = admin_client.get(f"/admin/messages_app/message/{reply.pk}/change/")
    assert "Once upon a &lt;time&gt;" in page.content.decode()
    listing = admin_client.get("/admin/messages_app/message/", {"q": "time"})
    assert f"/admin/messages_app/message/{reply.pk}/change/" in listing.content.decode()


def test_message_text_of_a_row_read_without_its_chunks_reads_them(room: Room, alice: User) -> None:
    reply, attempt = streaming_reply(room, alice)
    append(reply, attempt, "x")
    append(reply, attempt, "y")
    assert message_text(Message.objects.get(pk=reply.pk)) == "xy"


TEXTS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=0, max_size=40
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pieces=st.lists(TEXTS, min_size=1, max_size=25), fold=st.integers(64, 200))
def test_folding_chunks_equals_concatenating_them(
    room: Room, alice: User, pieces: list[str], fold: int
) -> None:
    with override_settings(GPT_FOLD_CHARS=fold, GPT_MAX_REPLIES_PER_MINUTE=10**6):
        reply, attempt = streaming_reply(room, alice)
        expected = ""
        version = Message.objects.get(pk=reply.pk).version
        for piece in pieces:
            written = append(reply, attempt, piece)
            cleaned = services.clean_model_text(piece)
            assert written is not None
            if cleaned:
                version += 1
                assert written.offset == len(expected)
            expected += cleaned
            row = stored(reply.pk)
            assert (row.body, row.version, row.text_length) == (expected, version, len(expected))
            # a reader never joins more than a fold's worth of chunk text
            assert sum(len(t) for t in chunk_texts(reply)) < fold + 40
        services.reply_finish(message_id=reply.pk, attempt=attempt, model="m")
        row = Message.objects.get(pk=reply.pk)
        assert (row.body, chunk_texts(reply)) == (expected, [])


def test_migration_gives_existing_rows_their_text_length(transactional_db: Any) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("messages_app", "0002_rooms_membership")])
    old = executor.loader.project_state([("messages_app", "0002_rooms_membership")]).apps
    room = old.get_model("messages_app", "Room").objects.create(name="Old", slug="old")
    old.get_model("messages_app", "Message").objects.create(room=room, body="héllo 👍🏽")
    executor = MigrationExecutor(connection)
    executor.migrate([("messages_app", "0003_reply_chunks")])
    new = executor.loader.project_state([("messages_app", "0003_reply_chunks")]).apps
    row = new.get_model("messages_app", "Message").objects.get(room__slug="old")
    assert (row.body, row.text_length, row.unfolded_length) == ("héllo 👍🏽", 8, 0)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
