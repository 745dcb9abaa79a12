"""The chat in a real browser: headless Chromium against daphne, a Celery worker,
Redis, Postgres and the test model server (issue 3, "How it is tested").

The model server pauses at a chosen token (``hold_after``) until released, so a
test acts at a known point mid-reply instead of sleeping; everything else waits
on conditions (Playwright's ``expect``, or ``wait_until`` for the model server
and the database) with generous timeouts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.sessions.models import Session
from playwright.sync_api import Locator, Page, WebSocketRoute, expect

from messages_app.models import MemberRole, Membership, Message, Role, Room, Status, User
from tests.conftest import Stack
from tests.e2e.conftest import PHONE, Browsing, expect_live, wait_until
from tests.live import ModelServer
from tests.rows import stored
from worker.chunker import Chunker
from worker.demo_llm import tokenize

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-Strong-pass-9"
# Plain words, so that the text a page shows is the row's text, character for character.
REPLY = (
    "Alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu."
)
RATE = 40  # tokens per second once released: slow enough to watch, quick enough to wait for


@pytest.fixture
def trip(alice: User) -> Room:
    # Granularity fixed here so that what is written at a hold point is known.
    return Room.objects.create(name="Trip planning", slug="trip", granularity="word")


def flushed_after(tokens_sent: int, text: str = REPLY) -> str:
    """What the row holds while the model is held after ``tokens_sent`` tokens (word mode)."""
    chunker = Chunker("word")
    return "".join(piece for token in tokenize(text)[:tokens_sent] for piece in chunker.feed(token))


def hold(model_server: ModelServer, index: int) -> None:
    """Let a held stream go on to token ``index``, where it waits again."""
    model_server.control(hold_after=index, release=True)


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message", exact=True)


def send(page: Page, text: str) -> None:
    """Type ``text`` in the composer, press Enter, and wait until the post succeeded."""
    box = composer(page)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def reply(page: Page) -> Locator:
    return page.locator("article[data-role='assistant']").last


def body(article: Locator) -> Locator:
    return article.locator(".msg__body")


def row_of(article: Locator) -> Message:
    """The article's row as the database holds it (a streaming reply's chunks too)."""
    return stored(int(article.get_attribute("data-message-id") or 0))


# Records every text a reply's body shows, to prove it never showed anything but
# a prefix of the reply (no corrupt, doubled or lost text, ever).
RECORD_BODIES = """
() => {
  window.__bodies = [];
  const log = document.getElementById("messages");
  new MutationObserver(() => {
    for (const el of log.querySelectorAll("article[data-role='assistant'] .msg__body")) {
      const text = el.textContent.trim();
      if (window.__bodies[window.__bodies.length - 1] !== text) window.__bodies.push(text);
    }
  }).observe(log, { childList: true, subtree: true, characterData: true });
}
"""


def bodies_seen(page: Page) -> list[str]:
    return page.evaluate("window.__bodies")


def assert_only_prefixes(seen: list[str], text: str = REPLY) -> None:
    for shown in seen:
        assert shown == "thinking…" or text.startswith(shown), f"showed {shown!r}"


# --- accounts and rooms --------------------------------------------------------------


def test_visitor_signs_up_from_a_room_link_then_logs_out_and_back_in(
    browsing: Browsing, stack: Stack, room: Room
) -> None:
    # An anonymous visitor with a room's link is sent to log in, and on to sign up.
    page = browsing.page(None, "/rooms/general/")
    expect(page).to_have_url(f"{stack.http_url}/accounts/login/?next=/rooms/general/")
    page.get_by_role("link", name="Create an account").click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/\?next=/rooms/general/$"))

    page.get_by_label("Username").fill("dana")
    page.get_by_label("Display name").fill("Dana Scully")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD + "x")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text("The two password fields didn’t match.")).to_be_visible()

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    # Signed in, and back where the link pointed.
    expect(page).to_have_url(f"{stack.http_url}/rooms/general/")
    expect_live(page)
    expect(page.locator(".account__name")).to_have_text("Dana Scully")
    send(page, "Hello from Dana")
    mine = page.locator("article[data-role='user']")
    expect(mine.locator(".msg__author")).to_have_text("Dana Scully")
    dana = User.objects.get(username="dana")
    assert dana.display_name == "Dana Scully"
    assert Message.objects.get(author=dana).body == "Hello from Dana"

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{stack.http_url}/accounts/login/")
    page.goto("/rooms/general/")
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{stack.http_url}/rooms/general/")
    expect_live(page)
    expect(page.locator("article[data-role='user'] .msg__body")).to_have_text("Hello from Dana")


def test_home_lists_rooms_and_creates_one(browsing: Browsing, stack: Stack, alice: User) -> None:
    Room.objects.create(name="General", slug="general")
    page = browsing.page(alice, "/")
    expect(page.locator(".room-card__name")).to_have_text(["General"])

    page.get_by_label("Room name").fill("Book club")
    page.get_by_role("button", name="Create room").click()
    expect(page).to_have_url(f"{stack.http_url}/rooms/book-club/")
    expect_live(page)
    expect(page.get_by_role("heading", name="Book club")).to_be_visible()
    expect(page.locator("#empty")).to_be_visible()

    # A taken address: the service's reason is shown on the form.
    page.goto("/")
    page.get_by_label("Room name").fill("Another")
    page.get_by_text("More options").click()
    page.get_by_label("Address").fill("general")
    page.get_by_role("button", name="Create room").click()
    expect(page.get_by_text("The address 'general' is taken.")).to_be_visible()
    expect(page.locator(".room-card__name")).to_have_text(["Book club", "General"])


# --- the composer ------------------------------------------------------------------------


def test_composer_enter_sends_shift_enter_breaks_and_a_refused_post_keeps_its_text(
    browsing: Browsing, alice: User, trip: Room
) -> None:
    page = browsing.room(alice, trip.slug)
    box = composer(page)
    error = page.locator("#composer-error")

    # Refused by the server: the text stays and the reason shows.
    box.fill("x" * 4001)
    box.press("Enter")
    expect(error).to_have_text("The message is 4001 characters; the limit is 4000.")
    expect(box).to_have_value("x" * 4001)
    expect(page.locator("article")).to_have_count(0)

    # Shift+Enter is a new line; editing hides the error; the Send button sends.
    box.fill("first line")
    expect(error).to_be_hidden()
    box.press("Shift+Enter")
    box.press_sequentially("second *line*")
    expect(box).to_have_value("first line\nsecond *line*")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(box).to_have_value("")
    article = page.locator("article[data-role='user']")
    expect(article).to_have_count(1)
    expect(article).to_have_attribute("data-status", "done")
    expect(article.locator(".msg__author")).to_have_text("Alice")
    expect(article.locator("time.msg__time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    expect(article.locator(".msg__body br")).to_have_count(1)
    expect(article.locator(".msg__body em")).to_have_text("line")

    # Enter on an empty box sends nothing.
    box.press("Enter")
    send(page, "third")
    expect(page.locator("article")).to_have_count(2)
    assert list(Message.objects.order_by("id").values_list("body", flat=True)) == [
        "first line\nsecond *line*",
        "third",
    ]


# --- streaming replies ---------------------------------------------------------------------


def test_reply_grows_in_both_browsers_and_ends_as_the_row(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User, trip: Room
) -> None:
    # The model is held before its first token: the reply is claimed but empty.
    model_server.control(text=REPLY, tokens_per_second=RATE, first_token_delay=0, hold_after=0)
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    b.evaluate(RECORD_BODIES)

    send(a, "@gpt spell the alphabet")
    for page in (a, b):
        asked = page.locator("article[data-role='user']")
        expect(asked.locator(".msg__author")).to_have_text("Alice")
        expect(asked.locator(".mention")).to_have_text("@gpt")
        expect(reply(page).locator(".thinking")).to_have_text("thinking…")
    wait_until(lambda: model_server.stats()["held_streams"] == 1)

    # Two known points mid-reply: both pages show exactly what the row holds.
    lengths = []
    for index in (6, 14):
        hold(model_server, index)
        expected = flushed_after(index)
        for page in (a, b):
            expect(body(reply(page))).to_have_text(expected)
            expect(reply(page)).to_have_attribute("data-status", "streaming")
            expect(reply(page)).to_have_attribute("aria-busy", "true")
            expect(reply(page).locator(".msg__state")).to_have_text("writing…")
        # Stop: for Alice, who asked; not for Bob, a plain member (issue 9).
        expect(reply(a).get_by_role("button", name="Stop")).to_be_visible()
        expect(reply(b).get_by_role("button", name="Stop")).to_be_hidden()
        assert row_of(reply(b)).body == expected
        lengths.append(len((body(reply(b)).text_content() or "").strip()))
    assert 0 < lengths[0] < lengths[1] < len(REPLY)

    model_server.control(release=True)
    for page in (a, b):
        expect(reply(page)).to_have_attribute("data-status", "done")
        expect(body(reply(page))).to_have_text(REPLY)
    row = row_of(reply(a))
    assert (row.status, row.body, row.model) == (Status.DONE, REPLY, "test-model")
    for page in (a, b):
        expect(reply(page)).to_have_attribute("data-version", str(row.version))
        expect(reply(page).locator(".msg__model")).to_have_text("test-model")
        expect(reply(page).locator(".msg__author")).to_have_text("GPT")
        expect(reply(page).get_by_role("button", name="Stop")).to_be_hidden()
        expect(page.locator("article")).to_have_count(2)
    seen = bodies_seen(b)
    assert_only_prefixes(seen)
    assert len({text for text in seen if text not in ("", "thinking…")}) >= 3


def test_reload_mid_reply_continues_with_no_lost_or_doubled_text(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User, trip: Room
) -> None:
    # Slower, so that the second reload lands while text is still flowing.
    model_server.control(text=REPLY, tokens_per_second=10, first_token_delay=0, hold_after=10)
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    send(a, "@gpt spell the alphabet")
    expected = flushed_after(10)
    expect(body(reply(b))).to_have_text(expected)

    # Reloaded while the model is held: the page holds exactly the row so far.
    b.reload()
    expect_live(b)
    expect(body(reply(b))).to_have_text(expected)
    expect(reply(b)).to_have_attribute("data-status", "streaming")

    # Reloaded again while text is flowing: it picks up the stream where it is.
    model_server.control(release=True)
    expect(body(reply(b))).not_to_have_text(expected)
    b.reload()
    expect_live(b)
    b.evaluate(RECORD_BODIES)
    expect(reply(b)).to_have_attribute("data-status", "done")
    expect(body(reply(b))).to_have_text(REPLY)
    expect(b.locator("article")).to_have_count(2)
    assert_only_prefixes(bodies_seen(b))
    assert row_of(reply(b)).body == REPLY


def test_stop_pressed_by_a_moderator_stops_the_reply_for_everyone(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User, trip: Room
) -> None:
    model_server.control(text=REPLY, tokens_per_second=RATE, first_token_delay=0, hold_after=10)
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    # Opening the public room made Bob a member; a plain member may not stop
    # Alice's reply (issue 9), a moderator may.
    Membership.objects.filter(room=trip, user=bob).update(role=MemberRole.MODERATOR)
    b.reload()
    expect_live(b)
    send(a, "@gpt spell the alphabet")
    partial = flushed_after(10)
    expect(body(reply(a))).to_have_text(partial)
    expect(body(reply(b))).to_have_text(partial)

    reply(b).get_by_role("button", name="Stop").click()
    for page in (a, b):
        expect(reply(page)).to_have_attribute("data-status", "cancelled")
        expect(reply(page).locator(".msg__state")).to_have_text("stopped")
        expect(reply(page).get_by_role("button", name="Stop")).to_be_hidden()
        expect(body(reply(page))).to_have_text(partial)
    row = row_of(reply(a))
    assert (row.status, row.body) == (Status.CANCELLED, partial)

    # The model goes on; the worker finds the row cancelled and writes nothing more.
    model_server.control(release=True)
    wait_until(lambda: model_server.stats()["open_streams"] == 0)
    row.refresh_from_db()
    assert (row.status, row.body) == (Status.CANCELLED, partial)
    expect(body(reply(a))).to_have_text(partial)


def test_failed_reply_shows_the_reason_and_demo_replies_say_so(
    browsing: Browsing, model_server: ModelServer, alice: User, trip: Room
) -> None:
    asked = Message.objects.create(room=trip, author=alice, body="@gpt hello?")
    Message.objects.create(
        room=trip, role=Role.ASSISTANT, reply_to=asked, body="Hi, I am **the demo**.", model="demo"
    )
    model_server.control(fail_status=401, fail_times=-1)
    a = browsing.room(alice, trip.slug)
    demo = reply(a)
    expect(demo.locator(".msg__model")).to_have_text("demo model · no API key")
    expect(demo.locator(".msg__body strong")).to_have_text("the demo")

    send(a, "@gpt are you there?")
    failed = a.locator("article[data-role='assistant']").nth(1)
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed.locator(".msg__state")).to_have_text("failed")
    expect(failed.locator(".msg__error")).to_contain_text("Failed: The model service refused")
    assert row_of(failed).error.startswith("The model service refused")


# --- safety -----------------------------------------------------------------------------------

XSS = (
    '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
    '<svg onload="window.__xss=3"></svg> [click me](javascript:window.__xss=4) '
    '<a href="#" onclick="window.__xss=5">raw link</a> <iframe src="javascript:parent.__xss=6">'
    "</iframe> **still bold**"
)


def assert_inert(page: Page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    log = page.locator("#messages")
    expect(log.locator("img, script, svg, iframe, object, embed, style")).to_have_count(0)
    assert (
        page.evaluate(
            """() => [...document.querySelectorAll("#messages *")].filter(
             (el) => [...el.attributes].some((a) => a.name.toLowerCase().startsWith("on"))
           ).length"""
        )
        == 0
    )
    assert (
        page.evaluate(
            """() => [...document.querySelectorAll("#messages a")].filter(
             (a) => /^\\s*javascript:/i.test(a.getAttribute("href") || "")
           ).length"""
        )
        == 0
    )


def test_xss_posted_by_one_user_is_inert_for_the_other(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User, trip: Room
) -> None:
    model_server.control(text=f"You wrote: {XSS}", tokens_per_second=0, first_token_delay=0)
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    send(a, XSS)
    send(a, "@gpt repeat that")
    expect(reply(b)).to_have_attribute("data-status", "done")

    shown = b.locator("article[data-role='user']").first
    expect(shown.locator(".msg__body")).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(shown.locator(".msg__body")).to_contain_text("<script>window.__xss=2</script>")
    expect(shown.locator(".msg__body strong")).to_have_text("still bold")
    expect(reply(b).locator(".msg__body")).to_contain_text("<script>window.__xss=2</script>")
    assert_inert(b)
    b.get_by_text("click me").first.click()
    b.get_by_text("click me").last.click()
    assert_inert(b)

    # The page as the server renders it, and then as the script re-renders it.
    b.reload()
    expect_live(b)
    expect(b.locator("article")).to_have_count(3)
    assert_inert(b)
    assert_inert(a)


# --- connection trouble -------------------------------------------------------------------------


def test_page_survives_the_server_going_away_and_coming_back(
    browsing: Browsing, stack: Stack, model_server: ModelServer, alice: User, bob: User, trip: Room
) -> None:
    model_server.control(text=REPLY, tokens_per_second=RATE, first_token_delay=0, hold_after=10)
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    send(a, "@gpt spell the alphabet")
    expect(body(reply(b))).to_have_text(flushed_after(10))
    reply_id = row_of(reply(b)).pk
    box = composer(a)
    try:
        stack.web.stop()
        for page in (a, b):
            expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
            expect(page.locator("#connection")).to_have_text("Reconnecting…")
        # The reply goes on without any web server; the pages see none of it now.
        model_server.control(release=True)
        wait_until(lambda: Message.objects.get(pk=reply_id).status == Status.DONE)
        # A message written meanwhile waits for the connection, text kept.
        box.fill("sent while away")
        box.press("Enter")
        expect(a.locator("#notice")).to_contain_text("Not connected")
        expect(box).to_have_value("sent while away")
    finally:
        if stack.web.popen is None or stack.web.popen.poll() is not None:
            stack.start_web()

    for page in (a, b):
        expect_live(page)
        # The snapshot replaced what the page held: the whole reply, once.
        expect(reply(page)).to_have_attribute("data-status", "done")
        expect(body(reply(page))).to_have_text(REPLY)
    expect(box).to_have_value("")
    for page in (a, b):
        expect(page.locator("article", has_text="sent while away")).to_have_count(1)
    send(b, "welcome back")
    expect(a.locator("article", has_text="welcome back")).to_have_count(1)
    assert Message.objects.filter(body="sent while away").count() == 1


def test_a_gap_in_deltas_is_repaired_by_a_resync(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User, trip: Room
) -> None:
    """Between server and page: drop one delta (a gap), then send every delta twice."""
    model_server.control(text=REPLY, tokens_per_second=RATE, first_token_delay=0)
    connections: list[str] = []
    dropped: list[dict[str, Any]] = []

    def route(ws: WebSocketRoute) -> None:
        number = len(connections)
        connections.append(ws.url)
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "delta" and number == 0 and not dropped:
                dropped.append(frame)
                return
            ws.send(message)
            if frame["type"] == "delta" and number > 0:
                ws.send(message)  # a repeat: its version is not above the held one

        server.on_message(from_server)
        ws.on_message(lambda message: server.send(message))

    context = browsing.context(bob)
    context.route_web_socket(re.compile(r"/ws/rooms/"), route)
    b = context.new_page()
    browsing.watch(b)
    b.goto(f"/rooms/{trip.slug}/")
    expect_live(b)
    b.evaluate(RECORD_BODIES)
    a = browsing.room(alice, trip.slug)

    send(a, "@gpt spell the alphabet")
    expect(reply(b)).to_have_attribute("data-status", "done")
    expect(body(reply(b))).to_have_text(REPLY)
    assert len(dropped) == 1
    assert len(connections) == 2  # one resync, on the first gap
    assert_only_prefixes(bodies_seen(b))
    assert row_of(reply(b)).body == REPLY


def room_with_droppable_socket(
    browsing: Browsing, user: User, room: Room
) -> tuple[Page, list[WebSocketRoute]]:
    """``user``'s page on ``room``, with a handle to drop its socket as a network would."""
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.connect_to_server()  # frames and closes pass through untouched

    context = browsing.context(user)
    context.route_web_socket(re.compile(r"/ws/rooms/"), route)
    page = context.new_page()
    browsing.watch(page)
    page.goto(f"/rooms/{room.slug}/")
    expect_live(page)
    return page, sockets


def test_a_page_whose_session_ended_sends_its_user_to_log_in_and_back(
    browsing: Browsing, stack: Stack, alice: User, trip: Room
) -> None:
    page, sockets = room_with_droppable_socket(browsing, alice, trip)
    # The tests hash passwords with MD5 for speed; the served app does not know it.
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    User.objects.filter(pk=alice.pk).update(password=hashed)
    # Signed out elsewhere, then the connection drops: the server refuses the
    # reconnect and the page sends its user to log in, and back.
    Session.objects.all().delete()
    sockets[-1].close(code=1012, reason="server restart")
    expect(page).to_have_url(f"{stack.http_url}/accounts/login/?next=/rooms/{trip.slug}/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{stack.http_url}/rooms/{trip.slug}/")
    expect_live(page)


def test_a_page_whose_room_was_deleted_says_so(browsing: Browsing, alice: User, trip: Room) -> None:
    page, sockets = room_with_droppable_socket(browsing, alice, trip)
    browsing.expected_console.append("status of 404")  # the page's check of itself
    trip.delete()
    sockets[-1].close(code=1012, reason="server restart")
    expect(page.locator("#connection")).to_have_text("This room no longer exists")
    expect(composer(page)).to_be_disabled()


# --- reading --------------------------------------------------------------------------------------


def scroll_state(page: Page) -> dict[str, float]:
    return page.evaluate(
        """() => {
             const s = document.getElementById("scroller");
             return {top: s.scrollTop, bottom: s.scrollHeight - s.scrollTop - s.clientHeight};
           }"""
    )


def test_auto_scroll_follows_new_messages_unless_the_reader_scrolled_up(
    browsing: Browsing, alice: User, bob: User, trip: Room
) -> None:
    Message.objects.bulk_create(
        Message(room=trip, author=bob, body=f"older message {n}") for n in range(40)
    )
    a = browsing.room(alice, trip.slug)
    b = browsing.room(bob, trip.slug)
    expect(a.locator("article").last).to_be_in_viewport()
    assert scroll_state(a)["bottom"] <= 2

    send(b, "at the bottom, you see me")
    expect(a.locator("article", has_text="at the bottom, you see me")).to_be_in_viewport()
    wait_until(lambda: scroll_state(a)["bottom"] <= 2)

    # Scrolled up to read: new messages do not move the page; a button offers them.
    a.locator("#scroller").evaluate("(s) => { s.scrollTop = 0; }")
    send(b, "scrolled up, you do not see me yet")
    fresh = a.locator("article", has_text="scrolled up, you do not see me yet")
    expect(fresh).to_have_count(1)
    expect(a.get_by_role("button", name="New messages")).to_be_visible()
    assert scroll_state(a)["top"] == 0
    expect(fresh).not_to_be_in_viewport()
    a.get_by_role("button", name="New messages").click()
    expect(fresh).to_be_in_viewport()
    expect(a.get_by_role("button", name="New messages")).to_be_hidden()


MARKDOWN_REPLY = """Happy to help, Alice! Here is a compact plan:

**Packing list**
- Water (2 litres each) and snacks
- Layers: a light jacket and a hat
- First-aid kit and sunscreen

**Splitting costs**: note expenses as you go, then settle once:

```python
costs = {"Alice": 42.0, "Bob": 18.5}
share = sum(costs.values()) / len(costs)
print({name: round(paid - share, 2) for name, paid in costs.items()})
```

Trail ideas: [AllTrails](https://www.alltrails.com/). Have a great hike!"""


def test_markdown_reply_renders_sanitised_and_a_screenshot_is_saved(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User
) -> None:
    room = Room.objects.create(name="Weekend trip", slug="weekend-trip", granularity="word")
    model_server.control(text=MARKDOWN_REPLY, tokens_per_second=200, first_token_delay=0)
    a = browsing.room(alice, room.slug)
    b = browsing.room(bob, room.slug, viewport=PHONE)
    send(b, "Who's in for a hike on Saturday?")
    send(a, "Me! @gpt can you suggest a packing list and a fair way to split costs?")
    for page in (a, b):
        done = reply(page)
        expect(done).to_have_attribute("data-status", "done")
        expect(done.locator(".msg__body ul > li")).to_have_count(3)
        expect(done.locator(".msg__body strong").first).to_have_text("Packing list")
        expect(done.locator(".msg__body pre > code.language-python")).to_contain_text(
            "share = sum(costs.values()) / len(costs)"
        )
        link = done.get_by_role("link", name="AllTrails")
        expect(link).to_have_attribute("href", "https://www.alltrails.com/")
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert row_of(reply(a)).body == MARKDOWN_REPLY
    expect(a.locator("#connection")).to_have_text("Live")
    docs = ROOT / "docs"
    a.screenshot(path=str(docs / "screenshot.png"))
    b.screenshot(path=str(docs / "screenshot-phone.png"))
