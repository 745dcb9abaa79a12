"""Open sockets per user, counted across two real web processes (daphne) in Redis.

The one over ``CHAT_MAX_SOCKETS_PER_USER`` is refused whichever process it
reaches; a process that dies (SIGKILL: no disconnect runs) frees its places
once their leases expire, while the sockets of the living process, renewed,
keep theirs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from messages_app import limits
from messages_app.models import Room, User
from tests import live
from tests.conftest import session_cookie
from tests.sockets import Socket

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 6  # short, so a dead process's places free quickly; renewed every 2 s


@pytest.fixture(scope="module")
def two_webs(django_db_setup: None, log_dir: Path) -> Iterator[tuple[int, live.Process, int]]:
    """Two daphne processes on the test database, 3 sockets per user at most."""
    env = live.stack_env(
        database_name=settings.DATABASES["default"]["NAME"],
        model_url="http://127.0.0.1:9",  # no reply is asked for here
        extra={
            "CHAT_MAX_SOCKETS_PER_USER": "3",
            "CHAT_SOCKET_LEASE_SECONDS": str(LEASE_SECONDS),
        },
    )
    port_a, port_b = live.free_port(), live.free_port()
    web_a = live.daphne(env, log_dir, port_a, name="web-limit-a")
    web_b = live.daphne(env, log_dir, port_b, name="web-limit-b")
    with live.running(web_a, web_b):
        for web, port in ((web_a, port_a), (web_b, port_b)):
            web.start()
            assert web.popen is not None
            live.wait_for_port(port, web.popen)
        yield port_a, web_a, port_b


async def socket_on(port: int, room: Room, user: User) -> Socket:
    cookie = await sync_to_async(session_cookie)(user)
    url = f"ws://127.0.0.1:{port}/ws/rooms/{room.slug}/"
    return await Socket(url, cookie, f"http://127.0.0.1:{port}").open()


async def refused_on(port: int, room: Room, user: User) -> tuple[dict[str, Any], int]:
    """Open a socket that the server accepts and then closes: its error frame and code."""
    cookie = await sync_to_async(session_cookie)(user)
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/rooms/{room.slug}/",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
    ) as connection:
        frame = json.loads(await asyncio.wait_for(connection.recv(), 30))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 30)
    assert closed.value.rcvd is not None
    return frame, closed.value.rcvd.code


async def open_count(user: User) -> int:
    return await sync_to_async(limits.open_sockets)(user.pk)


async def test_socket_limit_holds_across_web_processes_and_a_dead_process_frees_its_places(
    two_webs: tuple[int, live.Process, int], alice: User, bob: User
) -> None:
    port_a, web_a, port_b = two_webs
    room = await sync_to_async(Room.objects.create)(name="Busy", slug="busy")
    on_a = [await socket_on(port_a, room, alice) for _ in range(2)]
    on_b = await socket_on(port_b, room, alice)
    assert await open_count(alice) == 3

    # The fourth is refused on either process, and says why.
    for port in (port_a, port_b):
        frame, code = await refused_on(port, room, alice)
        assert (frame["type"], frame["code"]) == ("error", "rate_limited")
        assert "3 connections open" in frame["detail"]
        assert frame["retry_after"] == LEASE_SECONDS
        assert code == 4429
    assert await open_count(alice) == 3
    # Bob is not concerned.
    bobs = await socket_on(port_b, room, bob)

    # Process A dies without closing anything: its two leases expire unrenewed,
    # while B renews the lease of its socket.
    web_a.kill()
    async with asyncio.timeout(60):
        while await open_count(alice) > 1:  # noqa: ASYNC110 - polls Redis, another process's state
            await asyncio.sleep(0.2)
    await asyncio.sleep(LEASE_SECONDS)  # longer than a lease: B's must have been renewed
    assert await open_count(alice) == 1
    again = [await socket_on(port_b, room, alice) for _ in range(2)]
    assert await open_count(alice) == 3
    for socket in [on_b, bobs, *again]:
        await socket.close()
    assert len(on_a) == 2  # (kept open to the end: their process is gone)
