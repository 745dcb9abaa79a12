"""Appends of many streaming runs written together (services.reply_append, batched)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from messages_app import events, services
from messages_app.models import Message, Room, User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, dict[str, Any]]]:
    sent: list[tuple[int, dict[str, Any]]] = []
    monkeypatch.setattr(events, "send_to_rooms", lambda pairs: sent.extend(pairs))
    monkeypatch.setattr(
        events, "send_to_room", lambda room_id, event: sent.append((room_id, event))
    )
    monkeypatch.setattr(services, "_enqueue_reply", lambda message_id: None)
    return sent


def streaming_reply(room: Room, user: User) -> tuple[int, Any]:
    reply = services.message_post(room=room, author=user, body="@gpt go").reply
    assert reply is not None
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    return reply.pk, attempt


def test_batched_appends_of_concurrent_runs_are_each_committed_and_published_in_order(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    # given four streaming replies in two rooms, each appended by its own run (thread)
    replies = [streaming_reply(room, (alice, bob)[n % 2]) for n in range(2)]
    other = Room.objects.create(name="Other", slug="other")
    replies += [streaming_reply(other, (alice, bob)[n % 2]) for n in range(2)]
    published.clear()
    results: dict[int, list[services.Appended | None]] = {}

    def run(message_id: int, attempt: Any) -> None:
        results[message_id] = [
            services.reply_append(
                message_id=message_id, attempt=attempt, text=f" t{n}", batched=True
            )
            for n in range(30)
        ]

    threads = [threading.Thread(target=run, args=reply) for reply in replies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then every row holds its text whole, and every write was published once, in order
    expected = "".join(f" t{n}" for n in range(30))
    for message_id, _ in replies:
        row = Message.objects.get(pk=message_id)
        assert row.body == expected
        appended = results[message_id]
        assert [a.version for a in appended if a] == list(range(3, 33))
        deltas = [e for _, e in published if e["id"] == message_id]
        assert [d["version"] for d in deltas] == list(range(3, 33))
        assert "".join(d["text"] for d in deltas) == expected
        assert [d["offset"] for d in deltas] == [a.offset for a in appended if a]


def test_a_batched_append_to_a_cancelled_reply_returns_none_and_others_go_on(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    live, cancelled = streaming_reply(room, alice), streaming_reply(room, bob)
    services.reply_cancel(room=room, message_id=cancelled[0])
    assert (
        services.reply_append(message_id=cancelled[0], attempt=cancelled[1], text="x", batched=True)
        is None
    )
    appended = services.reply_append(message_id=live[0], attempt=live[1], text="y", batched=True)
    assert appended is not None and appended.offset == 0
    assert Message.objects.get(pk=live[0]).body == "y"
    assert Message.objects.get(pk=cancelled[0]).body == ""


def test_one_statement_appends_to_several_replies_and_skips_closed_ones(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    first, second, closed = (streaming_reply(room, user) for user in (alice, bob, alice))
    services.reply_cancel(room=room, message_id=closed[0])
    batch = [
        services._QueuedAppend(message_id, attempt, text)
        for (message_id, attempt), text in ((first, "Hé"), (second, "yo"), (closed, "no"))
    ]
    rows = services._append_rows(batch)
    assert rows[2] is None
    assert [row[0] for row in rows[:2]] == [
        services.Appended(version=3, offset=0),
        services.Appended(version=3, offset=0),
    ]
    assert rows[0][2]["frame"] == (
        f'{{"type":"delta","id":{first[0]},"version":3,"offset":0,"text":"Hé"}}'
    )
    assert [Message.objects.get(pk=pk).body for pk, _ in (first, second, closed)] == [
        "Hé",
        "yo",
        "",
    ]
