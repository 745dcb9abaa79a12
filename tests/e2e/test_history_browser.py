"""Scrolling back, links to one message and edits, in real browsers (issue 14).

A room of 300 messages: scrolling up loads older pages until the first, keeping
the reader's place; a link to an old message opens the room there and highlights
it; an edit in one browser shows in the other with "edited".
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from messages_app import services
from messages_app.models import MemberRole, Membership, Message, Room, User
from tests.e2e.conftest import Browsing, expect_live, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def big(alice: User, bob: User) -> Room:
    """A room of 300 messages (bob's), oldest first: "message 0" … "message 299"."""
    room = services.room_create(name="Long history", created_by=alice)
    Membership.objects.create(room=room, user=bob, role=MemberRole.MEMBER)
    Message.objects.bulk_create(
        Message(room=room, author=bob, body=f"message {n}", text_length=len(f"message {n}"))
        for n in range(300)
    )
    return room


def ids_shown(page: Page) -> list[int]:
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#messages article'),"
        " (a) => Number(a.dataset.messageId))"
    )


def offset_in_view(page: Page, message_id: int) -> float:
    """Where the message's top is, relative to the top of the scrolling area (px)."""
    return page.evaluate(
        """(id) => {
             const el = document.querySelector(`article[data-message-id="${id}"]`);
             const s = document.getElementById("scroller");
             return el.getBoundingClientRect().top - s.getBoundingClientRect().top;
           }""",
        message_id,
    )


def composer(page: Page) -> object:
    return page.get_by_role("textbox", name="Message", exact=True)


def test_scrolling_up_loads_older_messages_of_a_room_with_300_until_the_first(
    browsing: Browsing, alice: User, big: Room
) -> None:
    every = list(Message.objects.filter(room=big).order_by("id").values_list("id", flat=True))
    page = browsing.room(alice, big.slug)
    expect(page.locator("#messages article")).to_have_count(50)
    assert ids_shown(page) == every[-50:]
    expect(page.locator("#history-top")).not_to_have_text("Beginning of the room")

    loads = 0
    while page.locator("#history-top").get_attribute("data-state") != "start":
        count = len(ids_shown(page))
        first = ids_shown(page)[0]
        page.locator("#scroller").evaluate("(s) => { s.scrollTop = 0; }")
        place = offset_in_view(page, first)
        wait_until(lambda count=count: len(ids_shown(page)) > count)
        expect(page.locator("#history-top")).not_to_have_attribute("data-state", "loading")
        # The reader's place holds: the row that was at the top has not moved.
        assert abs(offset_in_view(page, first) - place) <= 2
        loads += 1
        assert loads <= 10, "scrolling up never reached the first message"

    assert ids_shown(page) == every  # all 300, in order, each once
    expect(page.locator("#history-top")).to_have_text("Beginning of the room")
    expect(page.locator("#messages article").first.locator(".msg__body")).to_have_text("message 0")
    # The whole room is on the page: no more requests however often one scrolls up.
    page.locator("#scroller").evaluate("(s) => { s.scrollTop = 0; }")
    expect(page.locator("#history-top")).to_have_attribute("data-state", "start")
    assert len(ids_shown(page)) == 300


def test_an_edit_appears_in_the_other_browser_with_edited(
    browsing: Browsing, alice: User, bob: User
) -> None:
    room = services.room_create(name="Typos", created_by=alice)
    Membership.objects.create(room=room, user=bob, role=MemberRole.MEMBER)
    a = browsing.room(alice, room.slug)
    b = browsing.room(bob, room.slug)
    box = a.get_by_role("textbox", name="Message", exact=True)
    box.fill("helo wrld")
    box.press("Enter")
    expect(box).to_have_value("")
    mine_a = a.locator("article", has_text="helo wrld")
    mine_b = b.locator("article", has_text="helo wrld")
    expect(mine_b).to_have_count(1)
    # Only the author is offered the edit.
    expect(mine_b.get_by_role("button", name="Edit")).to_be_hidden()

    mine_a.hover()
    mine_a.get_by_role("button", name="Edit").click()
    editor = a.get_by_role("textbox", name="Edit message")
    expect(editor).to_have_value("helo wrld")
    editor.fill("hello world")
    editor.press("Enter")
    expect(editor).to_have_count(0)
    for page in (a, b):
        edited = page.locator("#messages article").first
        expect(edited.locator(".msg__body")).to_have_text("hello world")
        expect(edited.locator(".msg__edited")).to_be_visible()
        expect(edited.locator(".msg__edited")).to_have_text("edited")
    row = Message.objects.get(room=room)
    assert (row.body, row.version, row.edited_at is not None) == ("hello world", 2, True)

    # Up in the empty composer edits the last own message; Escape leaves it as it was.
    box.press("ArrowUp")
    editor = a.get_by_role("textbox", name="Edit message")
    expect(editor).to_have_value("hello world")
    editor.fill("not saved")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(a.locator("#messages article").first.locator(".msg__body")).to_have_text("hello world")
    assert Message.objects.get(room=room).version == 2

    # An edit to nothing is refused in the page, and nothing is sent.
    box.press("ArrowUp")
    editor = a.get_by_role("textbox", name="Edit message")
    editor.fill("   ")
    editor.press("Enter")
    expect(a.locator(".msg__editor-error")).to_contain_text("empty")
    # One the server refuses says why in the editor, which stays open with the text.
    editor.fill("x" * 4001)
    editor.press("Enter")
    expect(a.locator(".msg__editor-error")).to_contain_text("the limit is 4000")
    expect(editor).to_have_value("x" * 4001)
    editor.press("Escape")
    assert Message.objects.get(room=room).body == "hello world"
    # The page still works after a refused edit.
    box.fill("and one more")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(b.locator("article", has_text="and one more")).to_have_count(1)


def test_a_link_to_an_old_message_scrolls_to_and_highlights_it(
    browsing: Browsing, alice: User, bob: User, big: Room
) -> None:
    every = list(Message.objects.filter(room=big).order_by("id").values_list("id", flat=True))
    old = every[10]
    page = browsing.room(alice, big.slug)
    # Its "Copy link" gives the address of one message (here, a recent one).
    recent = page.locator(f"article[data-message-id='{every[-3]}']")
    recent.hover()
    recent.get_by_role("button", name="Copy link").click()
    expect(page.locator("#chat")).to_have_attribute(
        "data-copied-link", f"{browsing.stack.http_url}/rooms/{big.slug}/?m={every[-3]}"
    )

    other = browsing.page(bob, f"/rooms/{big.slug}/?m={old}")
    expect_live(other)
    target = other.locator(f"article[data-message-id='{old}']")
    expect(target).to_have_attribute("data-highlighted", "true")
    expect(target).to_be_in_viewport()
    expect(target.locator(".msg__body")).to_have_text("message 10")
    # Away from the present, scrolling down loads newer messages; the jump goes back.
    jump = other.get_by_role("button", name="Jump to the newest messages")
    expect(jump).to_be_visible()
    jump.click()
    expect(other.locator(f"article[data-message-id='{every[-1]}']")).to_be_in_viewport()
    wait_until(lambda: ids_shown(other) == every[-50:])

    # A recent message: in the page already, highlighted at once.
    near = browsing.page(bob, f"/rooms/{big.slug}/?m={every[-3]}")
    expect(near.locator(f"article[data-message-id='{every[-3]}']")).to_have_attribute(
        "data-highlighted", "true"
    )


def test_scrolling_down_from_an_old_message_reaches_the_present_and_stays_live(
    browsing: Browsing, alice: User, bob: User, big: Room
) -> None:
    every = list(Message.objects.filter(room=big).order_by("id").values_list("id", flat=True))
    page = browsing.page(alice, f"/rooms/{big.slug}/?m={every[150]}")
    expect_live(page)
    expect(page.locator(f"article[data-message-id='{every[150]}']")).to_have_attribute(
        "data-highlighted", "true"
    )
    for _ in range(10):
        if ids_shown(page)[-1] == every[-1]:
            break
        page.locator("#scroller").evaluate("(s) => { s.scrollTop = s.scrollHeight; }")
        expect(page.locator("#history-bottom")).not_to_have_attribute("data-state", "loading")
    wait_until(lambda: ids_shown(page)[-1] == every[-1])
    shown = ids_shown(page)
    assert shown == sorted(set(shown)) and shown[-1] == every[-1]
    assert shown == every[every.index(shown[0]) :]  # no gap, nothing twice
    # Back in the present: a new message appears as usual.
    services.message_post(room=big, author=bob, body="live again")
    expect(page.locator("article", has_text="live again")).to_have_count(1)


@pytest.mark.parametrize(
    ("link", "notice"),
    [
        ("abc", "That link points to no message of this room."),
        ("-4", "That link points to no message of this room."),
        ("FOREIGN", "That link points to no message of this room."),
        ("UNKNOWN", "That link points to no message of this room."),
        ("DELETED", "That message was deleted."),
    ],
)
def test_a_bad_link_shows_the_room_with_a_notice(
    browsing: Browsing, alice: User, bob: User, link: str, notice: str
) -> None:
    room = services.room_create(name="Links", created_by=alice)
    other = services.room_create(name="Elsewhere", created_by=bob)
    elsewhere = services.message_post(room=other, author=bob, body="not here").message
    gone = services.message_post(room=room, author=alice, body="soon gone").message
    services.message_post(room=room, author=alice, body="still here")
    services.message_delete(message_id=gone.pk, actor=alice, room=room)
    value = {
        "FOREIGN": str(elsewhere.pk),
        "UNKNOWN": str(elsewhere.pk + 1000),
        "DELETED": str(gone.pk),
    }.get(link, link)
    page = browsing.page(alice, f"/rooms/{room.slug}/?m={value}")
    expect_live(page)
    expect(page.locator("#notice")).to_have_text(notice)
    expect(page.locator("article", has_text="still here")).to_have_count(1)


def test_a_streaming_reply_loaded_by_scrolling_back_keeps_updating(
    browsing: Browsing, alice: User, bob: User
) -> None:
    room = services.room_create(name="Busy", created_by=alice)
    question = services.message_post(room=room, author=alice, body="a long question").message
    # A reply row as a worker holds it (not queued: this test writes its text itself).
    reply = Message.objects.create(room=room, role="assistant", status="pending", reply_to=question)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    services.reply_append(message_id=reply.pk, attempt=attempt, text="Once upon")
    Message.objects.bulk_create(
        Message(room=room, author=bob, body=f"chatter {n}", text_length=len(f"chatter {n}"))
        for n in range(80)
    )
    page = browsing.room(alice, room.slug)
    old = page.locator(f"article[data-message-id='{reply.pk}']")
    expect(old).to_have_count(0)
    for _ in range(5):
        if old.count():
            break
        page.locator("#scroller").evaluate("(s) => { s.scrollTop = 0; }")
        expect(page.locator("#history-top")).not_to_have_attribute("data-state", "loading")
    expect(old.locator(".msg__body")).to_have_text("Once upon")
    services.reply_append(message_id=reply.pk, attempt=attempt, text=" a time")
    expect(old.locator(".msg__body")).to_have_text("Once upon a time")
    services.reply_finish(message_id=reply.pk, attempt=attempt, model="m")
    expect(old).to_have_attribute("data-status", "done")
    assert page.evaluate("document.getElementById('chat').dataset.resyncs || '0'") == "0"


def test_older_rows_kept_across_a_reconnect_are_read_again(
    browsing: Browsing, alice: User, bob: User, big: Room
) -> None:
    every = list(Message.objects.filter(room=big).order_by("id").values_list("id", flat=True))
    blocked = {"on": False}
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        server = ws.connect_to_server()
        # What the server sends reaches the page unless the test holds it back,
        # as a network that loses frames before it drops the connection.
        server.on_message(lambda message: None if blocked["on"] else ws.send(message))

    context = browsing.context(alice)
    context.route_web_socket(re.compile(r"/ws/rooms/"), route)
    page = context.new_page()
    browsing.watch(page)
    page.goto(f"/rooms/{big.slug}/")
    expect_live(page)
    page.locator("#scroller").evaluate("(s) => { s.scrollTop = 0; }")
    wait_until(lambda: len(ids_shown(page)) >= 100)
    expect(page.locator("#history-top")).not_to_have_attribute("data-state", "loading")
    old = every[-80]
    assert old in ids_shown(page)

    # Changed while the page hears nothing, then the connection drops.
    blocked["on"] = True
    services.message_edit(room=big, message_id=old, actor=bob, body="changed while away")
    sockets[0].close(code=1012, reason="server restart")
    blocked["on"] = False
    expect_live(page)
    article = page.locator(f"article[data-message-id='{old}']")
    expect(article.locator(".msg__body")).to_have_text("changed while away")
    expect(article.locator(".msg__edited")).to_be_visible()
    shown = ids_shown(page)
    assert shown == every[every.index(shown[0]) :]  # still one run, no gap
