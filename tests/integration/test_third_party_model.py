"""Replies streamed from an OpenAI-compatible server this project did not write.

The rest of the suite talks to the project's own model server
(``worker.demo_llm``), which could share a misreading of the protocol with the
client. Here the same stack (daphne, a Celery worker, the ``openai`` SDK over
HTTP) streams from mockllm, a mock server published on PyPI (FastAPI, one
character per SSE event, no usage chunk, its own ids and framing), run with
uvicorn as its README says.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from asgiref.sync import sync_to_async
from django.conf import settings

from messages_app.models import Message, Room, Status, User
from tests import live
from tests.conftest import Stack
from tests.sockets import open_socket, reply_finished, wait_for_reply_id

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Markdown, code, emoji with modifiers and joiners, accents: every character
# arrives in an event of its own, so a client that split or merged code points
# wrongly would show it here.
REPLY = (
    "Here is a plan, Alice:\n\n"
    "1. **Tea** at 3 p.m. ☕\n"
    '2. Then `print("hello")` in a block:\n\n'
    "```python\nfor i in range(3):\n    print(i)\n```\n\n"
    "Emoji: 👍🏽 👨‍👩‍👧 — café, naïve, 東京."
)
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def mockllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mockllm")
    responses = folder / "responses.yml"
    # Whatever the prompt (the worker sends the room's recent talk), this reply.
    responses.write_text(yaml.safe_dump({"responses": {}, "defaults": {"unknown_response": REPLY}}))
    port = live.free_port()
    env = {**os.environ, "MOCKLLM_RESPONSES_FILE": str(responses)}
    process = live.Process(
        "mockllm",
        [sys.executable, "-m", "uvicorn", "mockllm.server:app", "--port", str(port)],
        env,
        folder,
    )
    with live.running(process):
        process.start()
        assert process.popen is not None
        live.wait_for_port(port, process.popen)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def mockllm_stack(django_db_setup: None, mockllm_url: str, log_dir: Path) -> Iterator[Stack]:
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-mockllm"
    redis.Redis.from_url(settings.REDIS_URL).delete(queue)
    env = live.stack_env(
        database_name=settings.DATABASES["default"]["NAME"],
        model_url=mockllm_url,
        extra={"CELERY_TASK_QUEUE": queue, "OPENAI_MODEL": MODEL},
    )
    port = live.free_port()
    stack = Stack(
        web=live.daphne(env, log_dir, port, name="web-mockllm"),
        worker=live.celery_worker(env, log_dir, name="worker-mockllm"),
        env=env,
        port=port,
        log_dir=log_dir,
    )
    with live.running(stack.web, stack.worker):
        stack.start_worker()
        stack.start_web()
        yield stack


def test_mockllm_is_the_third_party_server_and_streams_sse(mockllm_url: str) -> None:
    # The server is the PyPI package's, not ours: its provider listing says so.
    providers = httpx.get(f"{mockllm_url}/providers", timeout=10).json()
    assert "openai" in str(providers)
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream(
        "POST", f"{mockllm_url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) > len(REPLY)  # one event per character, and more


async def test_reply_streams_exactly_from_a_third_party_openai_compatible_server(
    mockllm_stack: Stack, alice: User, bob: User
) -> None:
    room = await sync_to_async(Room.objects.create)(
        name="Third party", slug=f"third-{uuid.uuid4().hex[:6]}", granularity="token"
    )
    a = await open_socket(mockllm_stack, room, alice)
    b = await open_socket(mockllm_stack, room, bob)
    await a.send({"type": "post", "body": "@gpt plan?", "client_id": str(uuid.uuid4())})
    reply_id = await wait_for_reply_id(a)
    for socket in (a, b):
        await socket.until(reply_finished(reply_id))

    row = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert row.status == Status.DONE, mockllm_stack.logs()
    assert row.body == REPLY
    assert row.model == MODEL
    # mockllm sends no usage chunk: nothing is invented.
    assert row.completion_tokens is None and row.total_tokens is None
    for socket in (a, b):
        assert socket.view.body(reply_id) == REPLY
        assert socket.view.status(reply_id) == "done"
        assert socket.view.gaps == [] and socket.view.errors == []
        versions = socket.view.versions_of(reply_id)
        assert versions == sorted(set(versions)) and versions[-1] == row.version
    # Written as it streamed: more than one text write (insert, claim, finish aside).
    assert row.version - 3 > 1
    for socket in (a, b):
        await socket.close()
