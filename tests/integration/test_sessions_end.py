"""Sessions end everywhere (issue 9 point 5): logout, a password change, deactivation
and removal from a room close the user's sockets on every web process, through Redis.
Two daphne processes, real sockets, real HTTP logout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from messages_app import events, protocol, services
from messages_app.models import Room, User
from tests import live
from tests.conftest import Stack, session_cookie
from tests.sockets import open_socket

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def second_web(stack: Stack) -> Iterator[int]:
    """A second web process beside the stack's, on the same database and Redis."""
    port = live.free_port()
    web = live.daphne(stack.env, stack.log_dir, port, name="web2")
    with live.running(web):
        web.start()
        assert web.popen is not None
        live.wait_for_port(port, web.popen)
        yield port


async def sockets_on_both(
    stack: Stack, second_web: int, room: Room, user: User, cookie: str | None = None
) -> list[Any]:
    return [
        await open_socket(stack, room, user, cookie=cookie),
        await open_socket(stack, room, user, port=second_web, cookie=cookie),
    ]


def http_logout(stack: Stack, cookie: str) -> None:
    """Log out as a browser does: the page's form, its CSRF token, a POST."""
    name, _, value = cookie.partition("=")
    with httpx.Client(base_url=stack.http_url, cookies={name: value}) as client:
        page = client.get("/")
        page.raise_for_status()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "the signed-in page has no logout form"
        response = client.post(
            "/accounts/logout/",
            data={"csrfmiddlewaretoken": token.group(1)},
            headers={"Referer": f"{stack.http_url}/", "Origin": stack.http_url},
        )
        assert response.status_code in (200, 302), response.text[:500]


async def test_logout_closes_the_users_sockets_on_every_web_process(
    stack: Stack, second_web: int, alice: User, bob: User, room: Room
) -> None:
    cookie = await sync_to_async(session_cookie)(alice)
    mine = await sockets_on_both(stack, second_web, room, alice, cookie)
    theirs = await sockets_on_both(stack, second_web, room, bob)
    await sync_to_async(http_logout)(stack, cookie)
    for socket in mine:
        assert await socket.closed_code() == protocol.CLOSE_UNAUTHENTICATED
    # the other user's sockets stay open and live
    await theirs[0].send({"type": "post", "body": "still here"})
    for socket in theirs:
        await socket.until(lambda view: any(r["body"] == "still here" for r in view.rows.values()))
        await socket.close()


@pytest.mark.parametrize("change", ["password", "deactivation"])
async def test_a_password_change_or_deactivation_closes_the_sockets_everywhere(
    stack: Stack, second_web: int, alice: User, room: Room, change: str
) -> None:
    sockets = await sockets_on_both(stack, second_web, room, alice)

    def apply() -> None:
        user = User.objects.get(pk=alice.pk)
        if change == "password":
            user.set_password("another-Strong-pass-7")
        else:
            user.is_active = False
        user.save()

    await sync_to_async(apply)()
    for socket in sockets:
        assert await socket.closed_code() == protocol.CLOSE_UNAUTHENTICATED


async def test_an_unrelated_save_of_the_user_closes_nothing(
    stack: Stack, alice: User, room: Room
) -> None:
    socket = await open_socket(stack, room, alice)

    def rename() -> None:
        user = User.objects.get(pk=alice.pk)
        user.display_name = "Alice B."
        user.save()

    await sync_to_async(rename)()
    await socket.send({"type": "post", "body": "after the rename"})
    await socket.until(
        lambda view: any(r["body"] == "after the rename" for r in view.rows.values())
    )
    await socket.close()


async def test_removal_from_a_room_closes_only_that_rooms_sockets_everywhere(
    stack: Stack, second_web: int, alice: User, room: Room
) -> None:
    other = await sync_to_async(Room.objects.create)(name="Other", slug="other")
    here = await sockets_on_both(stack, second_web, room, alice)
    there = await sockets_on_both(stack, second_web, other, alice)
    await sync_to_async(events.user_sockets_close)(
        user_id=alice.pk, code=protocol.CLOSE_FORBIDDEN, room_id=room.pk
    )
    for socket in here:
        assert await socket.closed_code() == protocol.CLOSE_FORBIDDEN
    await there[0].send({"type": "post", "body": "other room"})
    for socket in there:
        await socket.until(lambda view: any(r["body"] == "other room" for r in view.rows.values()))
        await socket.close()


async def test_an_owner_removing_a_member_closes_the_members_sockets_on_every_web_process(
    stack: Stack, second_web: int, alice: User, bob: User, room: Room
) -> None:
    # given Bob in the room (opening a public room joins it) on both web processes
    bobs = await sockets_on_both(stack, second_web, room, bob)
    alices = await sockets_on_both(stack, second_web, room, alice)
    # when Alice, the owner, removes him through the members panel's service
    await sync_to_async(services.membership_remove)(room=room, user_id=bob.pk, actor=alice)
    # then each of his sockets is closed "removed from this room", on both processes
    for socket in bobs:
        assert await socket.closed_code() == protocol.CLOSE_FORBIDDEN
    # and hers stay open and live
    await alices[0].send({"type": "post", "body": "without Bob"})
    for socket in alices:
        await socket.until(lambda view: any(r["body"] == "without Bob" for r in view.rows.values()))
        await socket.close()
