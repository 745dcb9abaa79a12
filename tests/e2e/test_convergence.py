"""Browsers converge on the database (issue 10 point 4), in Chromium.

- Events lost for real: the worker's Redis connection is cut at the end of a
  reply (its last events are never published) while the web process stays
  subscribed; the page still ends with the row as the database holds it, found
  by the heartbeat (CHAT_RECONCILE_SECONDS).
- A page fed an inconsistent stream resyncs, backing off, says why in the
  console, and settles once the stream is sound again.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from playwright.sync_api import Browser, ConsoleMessage, Page, WebSocketRoute, expect

from messages_app import events, protocol
from messages_app.models import Message, Room, Status, User
from tests import live
from tests.conftest import Stack
from tests.e2e.conftest import Browsing, expect_live, wait_until
from tests.live import ModelServer
from tests.messages_app.realtime.servers import CuttableProxy
from worker.demo_llm import tokenize

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

REPLY = "One two three four five six seven eight nine ten eleven twelve."


@pytest.fixture(scope="module")
def cut_stack(stack: Stack) -> Iterator[tuple[Stack, CuttableProxy]]:
    """A web process and a worker of their own; the worker reaches Redis through a
    proxy the test can cut, the web process directly."""
    redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = CuttableProxy(redis_port)
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-cut"
    env = {**stack.env, "CELERY_TASK_QUEUE": queue, "CHAT_RECONCILE_SECONDS": "0.5"}
    worker_env = {**env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
    port = live.free_port()
    cut = Stack(
        web=live.daphne(env, stack.log_dir, port, name="web-cut"),
        worker=live.celery_worker(worker_env, stack.log_dir, name="worker-cut"),
        env=env,
        port=port,
        log_dir=stack.log_dir,
    )
    with live.running(cut.web, cut.worker):
        cut.start_worker()
        cut.start_web()
        yield cut, proxy
    proxy.close()


def warnings_of(page: Page) -> list[str]:
    seen: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "warning":
            seen.append(message.text)

    page.on("console", on_console)
    return seen


def test_a_reply_whose_last_events_were_lost_converges_in_the_browser(
    browser: Browser,
    cut_stack: tuple[Stack, CuttableProxy],
    model_server: ModelServer,
    alice: User,
) -> None:
    stack, proxy = cut_stack
    room = Room.objects.create(name="Lost", slug="lost", created_by=alice)
    tokens = tokenize(REPLY)
    model_server.control(
        text=REPLY, tokens_per_second=50, first_token_delay=0, hold_after=len(tokens) - 3
    )
    browsing = Browsing(browser=browser, stack=stack)
    try:
        page = browsing.room(alice, room.slug)
        warnings = warnings_of(page)
        page.locator("#composer-body").fill("@gpt count to twelve")
        page.locator("#composer-body").press("Enter")
        reply = page.locator("article[data-role='assistant']")
        expect(reply).to_have_attribute("data-status", "streaming")
        wait_until(lambda: model_server.stats()["held_streams"] == 1)

        # when the worker's Redis connection is cut for the end of the reply
        proxy.cut()
        model_server.control(release=True)
        row = wait_until(
            lambda: Message.objects.filter(room=room, role="assistant", status=Status.DONE).first()
        )
        # (its last events were really lost: the worker could not publish them)
        wait_until(lambda: "could not publish" in stack.worker.log())
        proxy.restore()

        # then the page ends with the row as the database holds it
        expect(reply).to_have_attribute("data-status", "done")
        expect(reply.locator(".msg__body")).to_have_text(row.body)
        assert row.body == REPLY
        # found by the heartbeat, and said so in the console
        assert any("heartbeat" in text for text in warnings), warnings
        # while the web process's subscription stayed up all along
        assert "subscription lost" not in stack.web.log()
        browsing.check_pages()
    finally:
        browsing.close()


def test_a_page_fed_an_inconsistent_stream_backs_off_and_settles(
    browsing: Browsing, stack: Stack, alice: User
) -> None:
    room = Room.objects.create(name="Noisy", slug="noisy", created_by=alice)
    Message.objects.create(room=room, author=alice, role="user", body="hello", status="done")
    message_id = Message.objects.get(room=room).pk
    broken = 5  # the first connections each get a frame that cannot be applied
    connections: list[float] = []

    def route(ws: WebSocketRoute) -> None:
        number = len(connections)
        connections.append(time.monotonic())
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            ws.send(message)
            if number < broken and json.loads(message)["type"] == "snapshot":
                # a delta that does not follow what the page holds: a gap, every time
                bad = {"type": "delta", "id": message_id, "version": 99, "offset": 999}
                ws.send(json.dumps({**bad, "text": "x"}))

        server.on_message(from_server)
        ws.on_message(lambda message: server.send(message))

    context = browsing.context(alice)
    context.route_web_socket(re.compile(r"/ws/rooms/"), route)
    page = context.new_page()
    browsing.watch(page)
    warnings = warnings_of(page)
    page.goto(f"/rooms/{room.slug}/")

    # the page repairs each gap by a resync, then settles on a sound stream
    expect(page.locator("#chat")).to_have_attribute("data-resyncs", str(broken))
    expect_live(page)
    expect(page.locator(f"article[data-message-id='{message_id}'] .msg__body")).to_have_text(
        "hello"
    )
    assert len(connections) == broken + 1
    # each resync after the first waited at least its backoff (0.5 s, doubling):
    # it never loops, however often the stream breaks
    # (measured here, in the test process: half the scheduled wait is the bound, so
    # a delayed callback cannot fail the test; a loop would show waits near zero)
    times = connections[1:]
    waits = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    for n, waited in enumerate(waits):
        assert waited >= 0.5 * 2**n * 0.5, waits
    # and it said why, naming the frame that caused each gap
    gaps = [text for text in warnings if "resync" in text and "offset 999" in text]
    assert len(gaps) == broken, warnings
    # settled: two more heartbeats (every CHAT_RECONCILE_SECONDS) change nothing
    expect(page.locator("#chat")).to_have_attribute("data-resyncs", str(broken))
    assert len(connections) == broken + 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (protocol.CLOSE_FORBIDDEN, "You were removed from this room"),
        (protocol.CLOSE_UNAUTHENTICATED, "You were signed out"),
    ],
)
def test_a_page_whose_session_with_the_room_ended_says_why_and_stops(
    browsing: Browsing, alice: User, code: int, reason: str
) -> None:
    room = Room.objects.create(name="Ends", slug="ends", created_by=alice)
    connections: list[str] = []

    def route(ws: WebSocketRoute) -> None:
        connections.append(ws.url)
        ws.connect_to_server()

    context = browsing.context(alice)
    context.route_web_socket(re.compile(r"/ws/rooms/"), route)
    page = context.new_page()
    browsing.watch(page)
    page.goto(f"/rooms/{room.slug}/")
    expect_live(page)
    events.user_sockets_close(user_id=alice.pk, code=code, room_id=room.pk)
    expect(page.locator("#connection")).to_have_text(reason)
    expect(page.locator("#notice")).to_contain_text(reason)
    expect(page.locator("#chat")).to_have_attribute("data-ended", str(code))
    expect(page.locator("#composer-body")).to_be_disabled()
    # it does not reconnect: a heartbeat's worth of waiting later, still one socket
    page.wait_for_timeout(1500)
    assert len(connections) == 1
