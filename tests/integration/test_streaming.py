"""The whole stack as processes: daphne, a Celery worker, the model server over HTTP,
Postgres and Redis. Sockets are real WebSocket clients. The main test runs with
daphne's fast write path on (the stack's web process) and off (a second one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from messages_app.models import Message, Room, Status, User
from tests import live
from tests.conftest import Stack
from tests.live import ModelServer
from tests.sockets import open_socket, reply_finished, wait_for_reply_id, wait_until_held
from worker.chunker import Chunker
from worker.demo_llm import tokenize

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REPLY = (
    "Sure, Alice! Here is the plan. First, we meet at 3.14 p.m. sharp… then we eat.\n"
    "Emoji survive too: 👍🏽 and 👨‍👩‍👧 and café. Dr. Who agrees, e.g. on Tuesdays!\n"
    "- one\n- two\n\nThat's all?! Yes."
)
HOLD_AFTER = 15  # the model pauses after this many tokens until released


@pytest.fixture(scope="module")
def web_without_fast_path(stack: Stack) -> Iterator[int]:
    """A web process with CHAT_DAPHNE_FAST_PATH off: frames go through the ASGI send."""
    port = live.free_port()
    web = live.daphne(
        {**stack.env, "CHAT_DAPHNE_FAST_PATH": "false"}, stack.log_dir, port, name="web-plain"
    )
    with live.running(web):
        web.start()
        assert web.popen is not None
        live.wait_for_port(port, web.popen)
        yield port


@pytest.fixture(params=["fast-path", "asgi-send"])
def web_port(request: pytest.FixtureRequest, stack: Stack) -> int:
    if request.param == "fast-path":
        assert "daphne fast path: on" in stack.web.log()
        return stack.port
    port = request.getfixturevalue("web_without_fast_path")
    assert "daphne fast path: off" in (stack.log_dir / "web-plain.log").read_text()
    return port


def expected_writes(granularity: str) -> int:
    return len(flush_ends(granularity))


def flush_ends(granularity: str) -> list[int]:
    """Where each write ends when the worker keeps up (one token fed at a time)."""
    chunker, ends, length = Chunker(granularity), [], 0
    for token in tokenize(REPLY):
        for flushed in chunker.feed(token):
            length += len(flushed)
            ends.append(length)
    if chunker.finish():
        ends.append(len(REPLY))
    return ends


@pytest.mark.parametrize("granularity", ["token", "word", "sentence"])
async def test_reply_streams_to_every_socket_and_a_late_socket_resumes_mid_stream(
    stack: Stack,
    model_server: ModelServer,
    alice: User,
    bob: User,
    make_user: Any,
    granularity: str,
    web_port: int,
) -> None:
    # given a room with this granularity and two watching sockets
    room = await sync_to_async(Room.objects.create)(
        name="Plan", slug=f"plan-{granularity}", granularity=granularity
    )
    carol = await sync_to_async(make_user)("carol", "Carol")
    model_server.control(
        text=REPLY, tokens_per_second=200, first_token_delay=0, hold_after=HOLD_AFTER
    )
    a = await open_socket(stack, room, alice, port=web_port)
    b = await open_socket(stack, room, bob, port=web_port)

    # when A asks @gpt
    await a.send({"type": "post", "body": "@gpt what's the plan?", "client_id": str(uuid.uuid4())})
    reply_id = await wait_for_reply_id(a)

    # and a third socket connects while the model is paused mid-reply
    await a.until(lambda view: len(view.body(reply_id)) > 0)
    await wait_until_held(model_server)
    c = await open_socket(stack, room, carol, port=web_port)
    snapshot_row = c.view.snapshot_rows[reply_id]
    assert snapshot_row["status"] == "streaming"
    assert 0 < len(snapshot_row["body"]) < len(REPLY)
    assert REPLY.startswith(snapshot_row["body"])
    model_server.control(release=True)

    # then every socket ends with exactly the model's text, as the row holds it
    for socket in (a, b, c):
        await socket.until(reply_finished(reply_id))
    row = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert row.status == Status.DONE, stack.logs()
    assert row.body == REPLY
    assert row.model == "test-model"
    assert row.completion_tokens == len(tokenize(REPLY))
    assert row.prompt_tokens and row.total_tokens
    for socket in (a, b, c):
        assert socket.view.body(reply_id) == REPLY
        assert socket.view.status(reply_id) == "done"
        assert socket.view.gaps == [] and socket.view.stale == [] and socket.view.errors == []
        # versions after the snapshot: rising, none repeated, up to the row's last.
        # Writes that reach a web process together may share one frame (their
        # joined text, the last version: docs/architecture.md allows it), so a version may be
        # skipped; the text may not: every delta started where the held text ended
        # (no gaps, above) and the text is the model's, whole.
        versions = socket.view.versions_of(reply_id)
        after_snapshot = socket.view.snapshot_rows.get(reply_id, {"version": 0})["version"]
        assert versions == sorted(set(versions))
        assert versions[0] > after_snapshot
        assert versions[-1] == row.version

    # and the writes follow the granularity: each ends where the chunker flushes
    # (a write may carry several flushes that arrived while the last one ran, and
    # a frame several writes that reached the web process together);
    # the row's versions: insert (1) + claim (1) + one per write + finish (1)
    ends = [delta["offset"] + len(delta["text"]) for delta in a.view.deltas]
    assert set(ends) <= set(flush_ends(granularity))
    assert ends[-1] == len(REPLY)
    writes = row.version - 3
    assert len(ends) <= writes <= expected_writes(granularity)
    for socket in (a, b, c):
        await socket.close()


def test_expected_writes_order_token_word_sentence() -> None:
    assert expected_writes("token") > expected_writes("word") > expected_writes("sentence") > 1


async def test_reply_context_names_the_speakers(
    stack: Stack, model_server: ModelServer, alice: User, bob: User, room: Room
) -> None:
    model_server.control(text="Noted.", tokens_per_second=0, first_token_delay=0)
    a = await open_socket(stack, room, alice)
    b = await open_socket(stack, room, bob)
    await b.send({"type": "post", "body": "I prefer tea"})
    await a.until(lambda view: len(view.rows) == 1)
    await a.send({"type": "post", "body": "@gpt what does Bob prefer?"})
    reply_id = await wait_for_reply_id(a)
    await a.until(reply_finished(reply_id))
    assert a.view.body(reply_id) == "Noted."
    sent = model_server.stats()["last_request"]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    contents = [(m["role"], m["content"]) for m in sent["messages"]]
    # The prompt, then the room's name as JSON data (never in the prompt itself:
    # issue 13), then the talk, each speaker's name a JSON string.
    assert contents[0][0] == "system" and "General" not in contents[0][1]
    assert contents[1][0] == "system" and '"room": "General"' in contents[1][1]
    assert contents[2:] == [
        ("user", '"Bob": I prefer tea'),
        ("user", '"Alice": @gpt what does Bob prefer?'),
    ]
    await a.close()
    await b.close()


async def test_model_failure_after_some_tokens_keeps_partial_text(
    stack: Stack, model_server: ModelServer, alice: User, room: Room
) -> None:
    model_server.control(
        text="one two three four five six", tokens_per_second=0, first_token_delay=0, drop_after=3
    )
    a = await open_socket(stack, room, alice)
    await a.send({"type": "post", "body": "@gpt count"})
    reply_id = await wait_for_reply_id(a)
    await a.until(reply_finished(reply_id))
    row = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert row.status == Status.FAILED
    assert row.body == "one two three"
    assert row.error == "Lost the connection to the model service."
    assert a.view.rows[reply_id]["error"] == row.error
    assert a.view.body(reply_id) == row.body
    await a.close()
