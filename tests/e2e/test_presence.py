"""Presence, typing and unread in two real browsers (issue 14 points 3-5): headless
Chromium on the real stack."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from messages_app.models import Membership, Message, Room, User
from tests.e2e.conftest import Browsing, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def trip(alice: User) -> Room:
    return Room.objects.create(name="Trip planning", slug="trip")


def send(page: Page, text: str) -> None:
    box = page.locator("#composer-body")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def set_visibility(page: Page, state: str) -> None:
    """Put the tab in the background (or back), as the browser tells a page."""
    page.evaluate(
        """(state) => {
          const as = (value) => ({value, configurable: true});
          Object.defineProperty(document, "visibilityState", as(state));
          Object.defineProperty(document, "hidden", as(state === "hidden"));
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_presence_shows_both_browsers_and_one_leaving(
    browsing: Browsing, alice: User, bob: User, trip: Room
) -> None:
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    for page in (a, b):
        expect(page.locator("#presence-list li")).to_have_count(2)
        expect(page.locator("#presence-count")).to_have_text("2 here")
        expect(page.locator("#presence-list li").first).to_have_attribute(
            "title", "Alice" if page is b else "Alice (you)"
        )
        expect(page.locator("#presence-list li").nth(1)).to_contain_text("B")
    # the members panel marks who has the room open
    a.locator("#members-drawer > summary").click()
    bob_in_panel = a.locator(f"#members-panel .member[data-user-id='{bob.pk}']")
    expect(bob_in_panel).to_have_attribute("data-online", "true")
    # Bob's second tab does not count him twice
    b2 = browsing.room(bob, trip.slug)
    expect(b2.locator("#presence-count")).to_have_text("2 here")
    b.close()
    b2.close()
    expect(a.locator("#presence-list li")).to_have_count(1)
    expect(a.locator("#presence-count")).to_have_text("1 here")
    expect(bob_in_panel).to_have_attribute("data-online", "false")


def test_typing_appears_in_the_other_browser_and_goes(
    browsing: Browsing, alice: User, bob: User, trip: Room
) -> None:
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    expect(a.locator("#presence-count")).to_have_text("2 here")
    # Bob types: Alice sees it, Bob does not see himself
    b.locator("#composer-body").press_sequentially("hel")
    expect(a.locator("#typing")).to_have_text("Bob is typing…")
    expect(b.locator("#typing")).to_have_text("")
    # ... and it goes by itself a few seconds after he stops
    expect(a.locator("#typing")).to_have_text("", timeout=20_000)
    # Alice types, then sends: Bob's line goes at once, with her message
    a.locator("#composer-body").press_sequentially("on my way")
    expect(b.locator("#typing")).to_have_text("Alice is typing…")
    a.locator("#composer-body").press("Enter")
    expect(b.locator("article .msg__body")).to_have_text("on my way")
    expect(b.locator("#typing")).to_have_text("")


def test_unread_count_on_the_home_page_rises_and_clears_after_opening_the_room(
    browsing: Browsing, alice: User, bob: User, trip: Room
) -> None:
    quiet = Room.objects.create(name="Quiet room", slug="quiet")
    home = browsing.room(alice, quiet.slug)  # alice is a member of both, nothing unread
    home.goto(f"/rooms/{trip.slug}/")
    expect(home.locator("#connection")).to_have_attribute("data-state", "online")
    home.goto("/")
    expect(home.locator(".room-card__unread")).to_have_count(0)

    b = browsing.room(bob, trip.slug)
    for n in range(3):
        send(b, f"news {n}")
    home.reload()
    card = home.locator(".room-card").first
    expect(card).to_have_attribute("data-room-slug", "trip")  # the room with news first
    expect(card.locator(".room-card__unread")).to_have_text("3 unread")

    card.click()
    expect(home.locator("article")).to_have_count(3)
    newest = Message.objects.filter(room=trip).order_by("-id").first()
    assert newest is not None
    wait_until(lambda: Membership.objects.get(room=trip, user=alice).last_read_id == newest.pk)
    home.goto("/")
    expect(home.locator(".room-card__unread")).to_have_count(0)


def test_tab_title_counts_new_messages_while_the_tab_is_in_the_background(
    browsing: Browsing, alice: User, bob: User, trip: Room
) -> None:
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    title = a.title()
    set_visibility(a, "hidden")
    send(b, "first")
    send(b, "second")
    expect(a).to_have_title(f"(2) {trip.name}")
    send(a, "mine")  # her own message is not news to her
    expect(a.locator("article")).to_have_count(3)
    expect(a).to_have_title(f"(2) {trip.name}")
    # nothing was read while in the background
    newest = Message.objects.filter(room=trip, author=bob).order_by("-id").first()
    assert newest is not None
    assert Membership.objects.get(room=trip, user=alice).last_read_id < newest.pk
    set_visibility(a, "visible")
    expect(a).to_have_title(title)
    wait_until(
        lambda: (
            Membership.objects.get(room=trip, user=alice).last_read_id
            == Message.objects.filter(room=trip).order_by("-id").values_list("id", flat=True)[0]
        )
    )
