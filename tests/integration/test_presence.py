"""Presence and typing across web processes (issue 14 points 3-4): two daphne processes
on one database and Redis, real sockets. A user on one process appears in the presence
of a socket on the other, and goes when the socket closes, or when their process is
killed (after its CHAT_PRESENCE_TTL_SECONDS, nothing else telling)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from messages_app.models import Room, User
from tests import live
from tests.conftest import Stack
from tests.sockets import Socket, open_socket

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def web_process(stack: Stack, name: str, **env: str) -> tuple[live.Process, int]:
    port = live.free_port()
    return live.daphne({**stack.env, **env}, stack.log_dir, port, name=name), port


@pytest.fixture(scope="module")
def second_web(stack: Stack) -> Iterator[int]:
    """A second web process beside the stack's, on the same database and Redis."""
    web, port = web_process(stack, "web2-presence")
    with live.running(web):
        web.start()
        assert web.popen is not None
        live.wait_for_port(port, web.popen)
        yield port


def names(socket: Socket) -> list[str] | None:
    presence = socket.view.presence
    return None if presence is None else [user["name"] for user in presence["users"]]


def listing(expected: list[str]) -> Any:
    return lambda view: (
        view.presence is not None and [user["name"] for user in view.presence["users"]] == expected
    )


async def test_a_user_on_one_process_is_present_on_the_other_until_the_socket_closes(
    stack: Stack, second_web: int, alice: User, bob: User, room: Room
) -> None:
    mine = await open_socket(stack, room, alice)
    await mine.until(listing(["Alice"]))
    theirs = await open_socket(stack, room, bob, port=second_web)
    await theirs.until(listing(["Alice", "Bob"]))
    await mine.until(listing(["Alice", "Bob"]))
    # typing crosses the processes too, to the other user only
    await theirs.send({"type": "typing"})
    await mine.until(lambda view: view.typing)
    assert mine.view.typing == [{"type": "typing", "user_id": bob.pk, "name": "Bob"}]
    await theirs.close()
    await mine.until(listing(["Alice"]))
    assert theirs.view.typing == []
    await mine.close()


async def test_a_killed_web_process_leaves_the_presence_after_its_ttl(
    stack: Stack, alice: User, bob: User, room: Room
) -> None:
    # given Bob on a web process whose entries last 2 s (it renews them every 0.5 s)
    doomed, port = web_process(
        stack, "web-doomed", CHAT_PRESENCE_TTL_SECONDS="2", CHAT_RECONCILE_SECONDS="0.5"
    )
    with live.running(doomed):
        doomed.start()
        assert doomed.popen is not None
        live.wait_for_port(port, doomed.popen)
        watcher = await open_socket(stack, room, alice)
        await open_socket(stack, room, bob, port=port)
        await watcher.until(listing(["Alice", "Bob"]))
        # when that process is killed (no socket closes cleanly, nobody leaves)
        doomed.kill()
        # then Alice's process, renewing its own entries, finds Bob's expired and says so
        await watcher.until(listing(["Alice"]), limit=30)
    await watcher.close()
