"""Rooms that belong to people, in real browsers (issue 9, "How it is tested"):
an owner invites a second browser through the link, the second joins and posts,
the owner deletes a message and removes them, their page says so; a third
browser never sees the private room.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from messages_app import services
from messages_app.models import Membership, Message, User
from tests.conftest import Stack
from tests.e2e.conftest import Browsing, expect_live

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


def open_members(page: Page) -> None:
    page.locator("#members-drawer > summary").click()
    expect(page.locator("#members-panel")).to_be_visible()


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def test_owner_invites_a_second_browser_then_removes_it_and_a_third_never_sees_the_room(
    browsing: Browsing, stack: Stack, alice: User, bob: User, make_user: object
) -> None:
    carol = make_user("carol", "Carol")  # type: ignore[operator]
    # The removed page's check of its panel answers 404, and Chromium logs it.
    browsing.expected_console.append("the server responded with a status of 404")
    secret = services.room_create(name="Secret plans", created_by=alice, visibility="private")

    # The owner makes an invite link in the members panel.
    owner = browsing.room(alice, secret.slug)
    open_members(owner)
    owner.get_by_role("button", name="Make an invite link").click()
    expect_live(owner)
    open_members(owner)
    link = owner.locator("#invite-url").input_value()
    assert re.fullmatch(rf"{re.escape(stack.http_url)}/invite/[-\w]{{40,}}/", link), link

    # A second browser opens it: a member, on the room's page, and posts.
    guest = browsing.page(bob, link.removeprefix(stack.http_url))
    expect(guest).to_have_url(f"{stack.http_url}/rooms/{secret.slug}/")
    expect_live(guest)
    send(guest, "Hello from Bob")
    expect(owner.locator("article[data-role='user'] .msg__body")).to_have_text("Hello from Bob")
    # The owner's open panel learnt of the new member (a "members" frame).
    expect(owner.locator("#members-panel li[data-role='member']")).to_contain_text("Bob")
    assert Membership.objects.get(room=secret, user=bob).role == "member"

    # The owner deletes Bob's message: every browser shows the tombstone at once.
    posted = owner.locator("article[data-role='user']").last
    posted.hover()
    posted.get_by_role("button", name="Delete").click()
    for page in (owner, guest):
        expect(page.locator("article[data-role='user'] .msg__body")).to_have_text("message deleted")
    assert Message.objects.get(author=bob).body == ""

    # The owner removes Bob; Bob's page says so and stops.
    owner.locator(f"#members-panel li[data-user-id='{bob.pk}']").get_by_role(
        "button", name="Remove Bob"
    ).click()
    expect(owner.locator(".flash")).to_contain_text("Member removed.")
    expect(guest.locator("#connection")).to_have_text("You were removed from this room")
    expect(guest.get_by_role("textbox", name="Message", exact=True)).to_be_disabled()
    assert not Membership.objects.filter(room=secret, user=bob).exists()
    # Reloading: the room no longer exists for Bob (asked with his browser's cookies;
    # the development server's 404 page carries inline style the test's CSP refuses).
    assert guest.request.get(f"/rooms/{secret.slug}/").status == 404

    # A third browser never sees the private room: not listed, not found.
    third = browsing.page(carol, "/")
    expect(third.locator(".room-list, .empty").first).to_be_visible()
    expect(third.get_by_text("Secret plans")).to_have_count(0)
    assert third.request.get(f"/rooms/{secret.slug}/").status == 404
    assert not Membership.objects.filter(room=secret, user=carol).exists()


def test_removed_member_page_is_closed_by_the_server_with_the_reason(
    browsing: Browsing, alice: User, bob: User
) -> None:
    # The panel refresh (the members frame's path) is cut off: what the page
    # shows comes from the server closing its socket (4403) on every web process.
    # (A frame sent before the close arrives is refused: test_room_consumer.py.)
    room = services.room_create(name="Open room", created_by=alice)
    guest = browsing.room(bob, room.slug)
    browsing.expected_console.append("ERR_FAILED")
    guest.route("**/members/", lambda route: route.abort())
    services.membership_remove(room=room, user_id=bob.pk, actor=alice)
    expect(guest.locator("#connection")).to_have_text("You were removed from this room")
    expect(guest.locator("#notice")).to_have_text("You were removed from this room.")
    expect(guest.get_by_role("textbox", name="Message", exact=True)).to_be_disabled()
    expect(guest.locator("#chat")).to_have_attribute("data-ended", "4403")
    assert not Membership.objects.filter(room=room, user=bob).exists()
