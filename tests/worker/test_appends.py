"""The append batcher (worker/appends.py) and the service it calls
(services.reply_appends_write): many runs' appends written together, each exactly once."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import OperationalError, connection

from messages_app import events, services
from messages_app.models import Room, User
from tests.rows import stored
from worker import appends as appends_module
from worker.appends import AppendQueue
from worker.dbretry import DatabaseUnavailable

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, dict[str, Any]]]:
    sent: list[tuple[int, dict[str, Any]]] = []
    monkeypatch.setattr(events, "send_to_rooms", lambda pairs: sent.extend(pairs))
    monkeypatch.setattr(
        events, "send_to_room", lambda room_id, event: sent.append((room_id, event))
    )
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)
    return sent


def streaming_reply(room: Room, user: User) -> tuple[int, Any]:
    reply = services.message_post(room=room, author=user, body="@gpt go").reply
    assert reply is not None
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    return reply.pk, attempt


def version_of(message_id: int) -> int:
    return stored(message_id).version


def test_batched_appends_of_concurrent_runs_are_each_committed_and_published_in_order(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    # given four streaming replies in two rooms, each appended by its own run (thread)
    replies = [streaming_reply(room, (alice, bob)[n % 2]) for n in range(2)]
    other = Room.objects.create(name="Other", slug="other")
    replies += [streaming_reply(other, (alice, bob)[n % 2]) for n in range(2)]
    published.clear()
    queue = AppendQueue()
    results: dict[int, list[services.Appended | None]] = {}

    def run(message_id: int, attempt: Any) -> None:
        version = version_of(message_id)
        results[message_id] = []
        for n in range(30):
            appended = queue.append(services.ReplyAppend(message_id, attempt, version, f" t{n}"))
            assert appended is not None
            version = appended.version
            results[message_id].append(appended)

    threads = [threading.Thread(target=run, args=reply) for reply in replies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then every row holds its text whole, and every write was published once, in order
    expected = "".join(f" t{n}" for n in range(30))
    for message_id, _ in replies:
        row = stored(message_id)
        assert row.body == expected
        appended = results[message_id]
        assert [a.version for a in appended if a] == list(range(3, 33))
        frames = [json.loads(e["frame"]) for _, e in published]
        deltas = [f for f in frames if f["id"] == message_id]
        assert [d["version"] for d in deltas] == list(range(3, 33))
        assert "".join(d["text"] for d in deltas) == expected
        assert [d["offset"] for d in deltas] == [a.offset for a in appended if a]


def test_batched_append_to_a_cancelled_reply_returns_none_and_others_go_on(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    live, cancelled = streaming_reply(room, alice), streaming_reply(room, bob)
    services.reply_cancel(room=room, message_id=cancelled[0])
    queue = AppendQueue()
    assert queue.append(services.ReplyAppend(cancelled[0], cancelled[1], 2, "x")) is None
    appended = queue.append(services.ReplyAppend(live[0], live[1], 2, "y"))
    assert appended is not None and appended.offset == 0
    assert stored(live[0]).body == "y"
    assert stored(cancelled[0]).body == ""


def test_reply_appends_write_appends_to_several_replies_and_skips_closed_ones(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    first, second, closed = (streaming_reply(room, user) for user in (alice, bob, alice))
    services.reply_cancel(room=room, message_id=closed[0])
    published.clear()
    results = services.reply_appends_write(
        appends=[
            services.ReplyAppend(message_id, attempt, 2, text)
            for (message_id, attempt), text in ((first, "Hé"), (second, "yo"), (closed, "no"))
        ]
    )
    assert results == [
        services.Appended(version=3, offset=0),
        services.Appended(version=3, offset=0),
        None,
    ]
    assert published[0][1]["frame"] == (
        f'{{"type":"delta","id":{first[0]},"version":3,"offset":0,"text":"Hé"}}'
    )
    assert [stored(pk).body for pk, _ in (first, second, closed)] == [
        "Hé",
        "yo",
        "",
    ]


def test_reply_appends_write_sent_twice_writes_each_append_once(
    room: Room, alice: User, bob: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    # given a batch that was committed (its result then lost to the sender)
    first, second = streaming_reply(room, alice), streaming_reply(room, bob)
    batch = [
        services.ReplyAppend(first[0], first[1], 2, "one"),
        services.ReplyAppend(second[0], second[1], 2, "two"),
    ]
    written = services.reply_appends_write(appends=batch)
    # when the very same batch is sent again
    again = services.reply_appends_write(appends=batch)
    # then nothing is written twice, and the sender learns what the row holds
    assert again == written == [services.Appended(3, 0), services.Appended(3, 0)]
    assert [stored(pk).body for pk in (first[0], second[0])] == ["one", "two"]
    assert [version_of(pk) for pk in (first[0], second[0])] == [3, 3]


def test_reply_appends_write_refuses_an_append_over_a_version_it_does_not_name(
    room: Room, alice: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    message_id, attempt = streaming_reply(room, alice)
    services.reply_appends_write(appends=[services.ReplyAppend(message_id, attempt, 2, "a")])
    services.reply_appends_write(appends=[services.ReplyAppend(message_id, attempt, 3, "b")])
    # an append that names an older version is neither written nor taken as written
    assert services.reply_appends_write(
        appends=[services.ReplyAppend(message_id, attempt, 2, "c")]
    ) == [None]
    assert stored(message_id).body == "ab"


def test_append_queue_retries_a_batch_whose_commit_result_was_lost_without_doubling(
    room: Room,
    alice: User,
    bob: User,
    published: list[tuple[int, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a database whose connection breaks right after the batch commits
    replies = [streaming_reply(room, alice), streaming_reply(room, bob)]
    real = services.reply_appends_write
    calls: list[int] = []

    def commit_then_lose(*, appends: list[services.ReplyAppend]) -> Any:
        calls.append(len(appends))
        result = real(appends=appends)
        if len(calls) == 1:
            connection.close()
            raise OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(appends_module.services, "reply_appends_write", commit_then_lose)
    queue = AppendQueue()
    outcomes: dict[int, services.Appended | None] = {}
    barrier = threading.Barrier(2)

    def run(message_id: int, attempt: Any) -> None:
        barrier.wait()
        outcomes[message_id] = queue.append(
            services.ReplyAppend(message_id, attempt, 2, f"text of {message_id}")
        )

    threads = [threading.Thread(target=run, args=reply) for reply in replies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then the retry wrote nothing twice, and each run was told its append is in
    assert len(calls) >= 2
    for message_id, _ in replies:
        row = stored(message_id)
        assert (row.body, row.version) == (f"text of {message_id}", 3)
        assert outcomes[message_id] == services.Appended(version=3, offset=0)


def test_append_queue_gives_up_after_gpt_db_retry_for_and_writes_nothing(
    room: Room,
    alice: User,
    published: list[tuple[int, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.GPT_DB_RETRY_FOR = 0.3
    message_id, attempt = streaming_reply(room, alice)

    def unreachable(*, appends: list[services.ReplyAppend]) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(appends_module.services, "reply_appends_write", unreachable)
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        AppendQueue().append(services.ReplyAppend(message_id, attempt, 2, "lost"))
    assert stored(message_id).body == ""


def test_reply_appends_write_publishing_failure_keeps_the_text_and_reports_it_written(
    room: Room, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)
    message_id, attempt = streaming_reply(room, alice)

    def broken(pairs: Any) -> None:
        raise RuntimeError("redis gone")

    monkeypatch.setattr(events, "send_to_rooms", broken)
    result = services.reply_appends_write(
        appends=[services.ReplyAppend(message_id, attempt, 2, "kept")]
    )
    assert result == [services.Appended(version=3, offset=0)]
    assert stored(message_id).body == "kept"


def test_reply_appends_write_cleans_nul_and_lone_surrogates(
    room: Room, alice: User, published: list[tuple[int, dict[str, Any]]]
) -> None:
    message_id, attempt = streaming_reply(room, alice)
    result = services.reply_appends_write(
        appends=[services.ReplyAppend(message_id, attempt, 2, "a\x00b\ud800c")]
    )
    assert result == [services.Appended(version=3, offset=0)]
    assert stored(message_id).body == "ab\ufffdc"
