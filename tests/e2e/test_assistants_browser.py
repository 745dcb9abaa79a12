"""Assistants in real browsers (issue 13): the composer's @ suggestions (keyboard
and mouse), replies under their assistant's name, and the room's settings form
as a moderator."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from messages_app.models import Assistant, MemberRole, Membership, Message, Role, Room, User
from tests.e2e.conftest import Browsing, expect_live, wait_until
from tests.live import ModelServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def lab(alice: User, bob: User) -> Room:
    room = Room.objects.create(name="Lab", slug="lab", created_by=alice)
    Membership.objects.create(room=room, user=alice, role=MemberRole.OWNER)
    Membership.objects.create(room=room, user=bob, role=MemberRole.MODERATOR)
    Assistant.objects.get_or_create(handle="gpt", defaults={"name": "GPT"})
    Assistant.objects.create(handle="claude", name="Claude", model="claude-test")
    Assistant.objects.create(handle="sleepy", name="Sleepy", active=False)
    return room


def box(page: Page) -> object:
    return page.get_by_role("textbox", name="Message", exact=True)


def test_composer_suggests_handles_and_replies_show_their_assistants_names(
    browsing: Browsing, model_server: ModelServer, alice: User, lab: Room
) -> None:
    model_server.control(text="Here I am.", tokens_per_second=0, first_token_delay=0)
    page = browsing.room(alice, lab.slug)
    composer = box(page)
    options = page.locator("#mention-list [role=option]")

    # "@" offers the active assistants, then the members; never the inactive one.
    composer.press_sequentially("@")  # type: ignore[attr-defined]
    expect(page.locator("#mention-list")).to_be_visible()
    expect(options).to_have_count(4)
    handles = [options.nth(i).get_attribute("data-handle") for i in range(4)]
    assert handles == ["claude", "gpt", "alice", "bob"]
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")

    # The keyboard: down once, Tab picks the second.
    composer.press("ArrowDown")  # type: ignore[attr-defined]
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    composer.press("Tab")  # type: ignore[attr-defined]
    expect(composer).to_have_value("@gpt ")  # type: ignore[arg-type]
    expect(page.locator("#mention-list")).to_be_hidden()

    # Escape closes the list and leaves the text alone.
    composer.press_sequentially("and @b")  # type: ignore[attr-defined]
    expect(options).to_have_count(1)
    composer.press("Escape")  # type: ignore[attr-defined]
    expect(page.locator("#mention-list")).to_be_hidden()
    expect(composer).to_have_value("@gpt and @b")  # type: ignore[arg-type]
    for _ in range(2):
        composer.press("Backspace")  # type: ignore[attr-defined]

    # The mouse: typing narrows the list, a click picks.
    composer.press_sequentially("@cl")  # type: ignore[attr-defined]
    expect(options).to_have_count(1)
    options.first.click()
    expect(composer).to_have_value("@gpt and @claude ")  # type: ignore[arg-type]

    # Enter with the list open picks; with it closed, sends.
    composer.press_sequentially("compare")  # type: ignore[attr-defined]
    composer.press("Enter")  # type: ignore[attr-defined]
    expect(composer).to_have_value("")  # type: ignore[arg-type]

    asked = page.locator("article[data-role='user']")
    expect(asked.locator(".mention")).to_have_text(["@gpt", "@claude"])
    replies = page.locator("article[data-role='assistant']")
    expect(replies).to_have_count(2)
    expect(replies.locator(".msg__author")).to_have_text(["GPT", "Claude"])
    expect(replies.nth(1)).to_have_attribute("data-assistant", "claude")
    for index in range(2):
        expect(replies.nth(index)).to_have_attribute("data-status", "done")
        expect(replies.nth(index).locator(".msg__body")).to_have_text("Here I am.")
    # After a reload (the server's rendering), the names are the same.
    page.reload()
    expect_live(page)
    expect(page.locator("article[data-role='assistant'] .msg__author")).to_have_text(
        ["GPT", "Claude"]
    )
    # Only active handles are highlighted.
    composer = box(page)
    composer.fill("@sleepy and @claude")  # type: ignore[attr-defined]
    composer.press("Escape")  # type: ignore[attr-defined]
    composer.press("Enter")  # type: ignore[attr-defined]
    last = page.locator("article[data-role='user']").last
    expect(last.locator(".msg__body")).to_have_text("@sleepy and @claude")
    expect(last.locator(".mention")).to_have_text(["@claude"])


def test_moderator_sets_the_rooms_instructions_and_the_model_receives_them(
    browsing: Browsing, model_server: ModelServer, bob: User, lab: Room
) -> None:
    model_server.control(text="Bonjour.", tokens_per_second=0, first_token_delay=0)
    # The refused form answers 400, and Chromium logs it.
    browsing.expected_console.append("the server responded with a status of 400")
    page = browsing.room(bob, lab.slug)
    page.locator("#room-settings-link").click()
    expect(page).to_have_url(f"{browsing.stack.http_url}/rooms/{lab.slug}/settings/")

    # Too long: the form says so and keeps nothing.
    instructions = page.get_by_label("Instructions for the assistants")
    instructions.fill("x" * 2001)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".field--error")).to_contain_text(
        "The instructions are 2001 characters; the limit is 2000."
    )
    lab.refresh_from_db()
    assert lab.assistant_instructions == ""

    page.get_by_label("Instructions for the assistants").fill("Always answer in French.")
    page.get_by_label("Recent messages the model sees").fill("5")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"{browsing.stack.http_url}/rooms/{lab.slug}/")
    expect(page.locator(".flash")).to_contain_text("assistant settings are saved")
    expect_live(page)
    lab.refresh_from_db()
    assert (lab.assistant_instructions, lab.context_messages) == ("Always answer in French.", 5)

    box(page).fill("@gpt bonjour ?")  # type: ignore[attr-defined]
    box(page).press("Escape")  # type: ignore[attr-defined]
    box(page).press("Enter")  # type: ignore[attr-defined]
    expect(page.locator("article[data-role='assistant'] .msg__body")).to_have_text("Bonjour.")
    reply = wait_until(lambda: Message.objects.filter(room=lab, role=Role.ASSISTANT).first())
    assert reply.assistant.handle == "gpt"
    sent = model_server.stats()["last_request"]["messages"]
    assert sent[1]["role"] == "system" and sent[1]["content"].endswith("Always answer in French.")


def test_plain_member_sees_no_settings_link(
    browsing: Browsing, make_user: object, lab: Room
) -> None:
    carol = make_user("carol", "Carol")  # type: ignore[operator]
    Membership.objects.create(room=lab, user=carol, role=MemberRole.MEMBER)
    page = browsing.room(carol, lab.slug)
    expect(page.locator("#room-settings-link")).to_have_count(0)


def test_suggestions_follow_the_members_who_join(
    browsing: Browsing, make_user: object, alice: User, lab: Room
) -> None:
    page = browsing.room(alice, lab.slug)
    carol = make_user("carol", "Carol")  # type: ignore[operator]
    browsing.room(carol, lab.slug)  # opening the public room joins it
    composer = box(page)
    options = page.locator("#mention-list [role=option]")
    # The members frame has reached the first page once its panel lists three.
    expect(page.locator("#members-panel")).to_have_attribute("data-count", "3")
    composer.press_sequentially("@car")  # type: ignore[attr-defined]
    expect(options).to_have_count(1)
    expect(options.first).to_have_attribute("data-handle", "carol")
    composer.press("Enter")  # type: ignore[attr-defined]
    expect(composer).to_have_value("@carol ")  # type: ignore[arg-type]
