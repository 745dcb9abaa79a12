"""Two assistants in one room, for real (issue 13): daphne, a Celery worker, the
model server over HTTP. Each request carries its assistant's model and prompt,
and both replies stream at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from messages_app.models import Assistant, Message, Room, Status, User
from tests.conftest import Stack
from tests.live import ModelServer
from tests.sockets import open_socket, reply_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TEXT = "one two three four five six seven eight nine ten"


async def wait_until_streams_held(model_server: ModelServer, count: int, limit: float = 60) -> None:
    async with asyncio.timeout(limit):
        while model_server.stats()["held_streams"] != count:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)


def create_assistants(model_url: str) -> None:
    # "@alpha" follows the settings (the stack's OPENAI_BASE_URL: the model server)
    # with a model of its own; "@beta" names the server itself, and the variable
    # that holds its key in the worker's environment.
    Assistant.objects.create(
        handle="alpha", name="Alpha", model="model-alpha", system_prompt="You are Alpha."
    )
    Assistant.objects.create(
        handle="beta",
        name="Beta",
        model="model-beta",
        base_url=f"{model_url}/v1",
        api_key_env="OPENAI_API_KEY",
        system_prompt="You are Beta.",
        temperature=0.5,
    )


async def test_two_assistants_stream_at_once_each_with_its_model_and_prompt(
    stack: Stack, model_server: ModelServer, alice: User, bob: User, room: Room
) -> None:
    await sync_to_async(create_assistants)(model_server.url)
    await sync_to_async(Room.objects.filter(pk=room.pk).update)(
        assistant_instructions="Answer in haiku."
    )
    model_server.control(text=TEXT, tokens_per_second=0, first_token_delay=0, hold_after=3)
    a = await open_socket(stack, room, alice)
    b = await open_socket(stack, room, bob)
    await a.send({"type": "post", "body": "@alpha and @beta: count to ten"})
    await a.until(lambda view: len(view.reply_ids()) == 2)
    alpha_id, beta_id = a.view.reply_ids()

    # Both are streaming at once: each model stream paused after three tokens.
    await wait_until_streams_held(model_server, 2)

    def streaming_text(view: Any, reply_id: int) -> bool:
        row = view.rows.get(reply_id)
        return row is not None and row["status"] == "streaming" and TEXT.startswith(row["body"])

    for reply_id in (alpha_id, beta_id):
        await b.until(lambda view, r=reply_id: streaming_text(view, r) and view.body(r))
    assert all(b.view.status(r) == "streaming" for r in (alpha_id, beta_id))
    model_server.control(release=True)
    for socket in (a, b):
        for reply_id in (alpha_id, beta_id):
            await socket.until(reply_finished(reply_id))
            assert socket.view.body(reply_id) == TEXT

    rows = {
        row.pk: row
        for row in await sync_to_async(list)(
            Message.objects.filter(pk__in=[alpha_id, beta_id]).select_related("assistant")
        )
    }
    assert [
        (rows[i].assistant.handle, rows[i].status, rows[i].model) for i in (alpha_id, beta_id)
    ] == [
        ("alpha", Status.DONE, "model-alpha"),
        ("beta", Status.DONE, "model-beta"),
    ], stack.logs()
    assert a.view.rows[alpha_id]["assistant"] == {"handle": "alpha", "name": "Alpha"}
    assert a.view.rows[beta_id]["assistant"] == {"handle": "beta", "name": "Beta"}

    # What each request carried: its model, its prompt first, then the room's.
    sent: dict[str, dict[str, Any]] = {
        r["model"]: r for r in model_server.stats()["requests_log"][-2:]
    }
    assert set(sent) == {"model-alpha", "model-beta"}
    for model, prompt in (("model-alpha", "You are Alpha."), ("model-beta", "You are Beta.")):
        messages = sent[model]["messages"]
        assert messages[0] == {"role": "system", "content": prompt}
        assert messages[1]["role"] == "system" and messages[1]["content"].endswith(
            "Answer in haiku."
        )
        assert messages[-1] == {
            "role": "user",
            "content": '"Alice": @alpha and @beta: count to ten',
        }
    assert "temperature" not in sent["model-alpha"]
    assert sent["model-beta"]["temperature"] == 0.5
    for socket in (a, b):
        assert socket.view.errors == []
        await socket.close()


async def test_assistant_with_an_unset_key_variable_fails_at_once_in_the_room(
    stack: Stack, model_server: ModelServer, alice: User, room: Room
) -> None:
    await sync_to_async(Assistant.objects.create)(
        handle="keyless",
        name="Keyless",
        base_url=f"{model_server.url}/v1",
        api_key_env="CHAT_TEST_UNSET_ASSISTANT_KEY",
    )
    before = model_server.stats()["requests"]
    a = await open_socket(stack, room, alice)
    await a.send({"type": "post", "body": "@keyless hello?"})
    await a.until(lambda view: len(view.reply_ids()) == 1)
    (reply_id,) = a.view.reply_ids()
    await a.until(reply_finished(reply_id))
    assert a.view.status(reply_id) == "failed"
    error = a.view.rows[reply_id]["error"]
    assert "CHAT_TEST_UNSET_ASSISTANT_KEY" in error and "is not set" in error
    assert model_server.stats()["requests"] == before
    await a.close()
