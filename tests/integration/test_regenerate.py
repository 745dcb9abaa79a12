"""Regenerate through the whole stack (issue 13): the ``retry`` frame over a real socket,
daphne, the Celery worker and the model server over HTTP, Postgres and Redis."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from messages_app.models import MemberRole, Membership, Message, ReplyRevision, Room, Status, User
from tests.conftest import Stack
from tests.live import ModelServer
from tests.sockets import open_socket, reply_finished, wait_for_reply_id, wait_until_held
from worker.demo_llm import tokenize

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FIRST = "one two three four five six"
SECOND = "A second answer, different from the first one."


def revisions_of(reply_id: int) -> list[tuple[int, str, str]]:
    return list(
        ReplyRevision.objects.filter(message_id=reply_id)
        .order_by("number")
        .values_list("number", "status", "text")
    )


async def test_a_failed_reply_regenerated_by_a_moderator_streams_again_to_every_socket(
    stack: Stack, model_server: ModelServer, alice: User, bob: User, room: Room
) -> None:
    # given a reply that failed after three tokens, watched by Alice (who asked) and Bob
    await sync_to_async(Membership.objects.create)(room=room, user=bob, role=MemberRole.MODERATOR)
    model_server.control(text=FIRST, tokens_per_second=0, first_token_delay=0, drop_after=3)
    a = await open_socket(stack, room, alice)
    b = await open_socket(stack, room, bob)
    await a.send({"type": "post", "body": "@gpt count"})
    reply_id = await wait_for_reply_id(a)
    await a.until(reply_finished(reply_id))
    assert a.view.status(reply_id) == "failed"
    first_request = model_server.stats()["last_request"]["messages"]
    await b.until(reply_finished(reply_id))

    # when Bob, a moderator, regenerates it while the model holds mid-reply
    model_server.control(
        text=SECOND, tokens_per_second=200, first_token_delay=0, drop_after=-1, hold_after=3
    )
    await b.send({"type": "retry", "id": reply_id})
    await a.until(lambda view: view.rows[reply_id]["revisions"] == 1)
    await wait_until_held(model_server)
    # then both sockets see the same row stream again from nothing
    await a.until(lambda view: view.status(reply_id) == "streaming" and view.body(reply_id))
    assert SECOND.startswith(a.view.body(reply_id))
    model_server.control(release=True)
    for socket in (a, b):
        await socket.until(lambda view: view.rows[reply_id]["revisions"] == 1)
        await socket.until(reply_finished(reply_id))
        assert socket.view.status(reply_id) == "done", stack.logs()
        assert socket.view.body(reply_id) == SECOND
        assert socket.view.rows[reply_id]["revisions"] == 1
        assert socket.view.gaps == [] and socket.view.errors == []

    # and the row holds the new attempt, its revision the old one; the model saw the
    # same conversation as the first time (not its own failed attempt)
    row = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert (row.status, row.body, row.revision_count) == (Status.DONE, SECOND, 1), stack.logs()
    assert row.completion_tokens == len(tokenize(SECOND))
    assert row.requested_at is not None and row.finished_at is not None
    assert await sync_to_async(revisions_of)(reply_id) == [(1, "failed", "one two three")]
    assert model_server.stats()["last_request"]["messages"] == first_request

    # and a retry of the reply while it is open is refused, changing nothing
    model_server.control(text=FIRST, tokens_per_second=200, hold_after=1, release=False)
    await a.send({"type": "retry", "id": reply_id})
    await a.until(lambda view: view.status(reply_id) == "streaming")
    await a.send({"type": "retry", "id": reply_id})
    await a.until(lambda view: view.errors)
    assert [e["code"] for e in a.view.errors] == ["not_retryable"]
    model_server.control(release=True, hold_after=-1)
    await a.until(lambda view: view.status(reply_id) == "done")
    assert a.view.body(reply_id) == FIRST
    assert [n for n, _status, _text in await sync_to_async(revisions_of)(reply_id)] == [1, 2]
    await a.close()
    await b.close()
