"""The HTML pages through Django's test client: accounts, rooms, the room page."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from messages_app import services
from messages_app.models import Message, Role, Room, Status, User

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-9"


@pytest.fixture
def client_alice(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def signup_data(**overrides: str) -> dict[str, str]:
    data = {
        "username": "carol",
        "display_name": "Carol Diaz",
        "password1": PASSWORD,
        "password2": PASSWORD,
    }
    data.update(overrides)
    return data


# --- everything requires a signed-in user ---------------------------------------


@pytest.mark.parametrize("path", ["/", "/rooms/general/", "/rooms/no-such-room/"])
def test_pages_send_anonymous_visitors_to_log_in_with_next(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_login_form_brings_the_visitor_back_to_next(
    client: Client, alice: User, room: Room
) -> None:
    page = client.get("/accounts/login/?next=/rooms/general/")
    assert page.status_code == 200
    assert b'name="next" value="/rooms/general/"' in page.content
    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD, "next": "/rooms/general/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/rooms/general/"
    assert client.get("/rooms/general/").status_code == 200


def test_login_with_a_wrong_password_shows_an_error(client: Client, alice: User) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_login_ignores_a_next_of_another_site(client: Client, alice: User) -> None:
    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == "/"


def test_logout_is_a_post_and_returns_to_log_in(client_alice: Client) -> None:
    response = client_alice.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client_alice.get("/").status_code == 302


# --- sign up ----------------------------------------------------------------------


def test_signup_creates_the_user_signs_in_and_goes_home(client: Client) -> None:
    response = client.post("/accounts/signup/", signup_data(display_name="  Carol   Diaz "))
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get(username="carol")
    assert user.display_name == "Carol Diaz"
    assert user.check_password(PASSWORD)
    assert client.session["_auth_user_id"] == str(user.pk)
    home = client.get("/")
    assert "Carol Diaz" in home.content.decode()


def test_signup_goes_on_to_next(client: Client, room: Room) -> None:
    page = client.get("/accounts/signup/?next=/rooms/general/")
    assert b'name="next" value="/rooms/general/"' in page.content
    response = client.post("/accounts/signup/", {**signup_data(), "next": "/rooms/general/"})
    assert response["Location"] == "/rooms/general/"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"password2": "something-else-9"}, "password2", "didn’t match"),
        ({"password1": "123", "password2": "123"}, "password2", "too short"),
        ({"password1": "password", "password2": "password"}, "password2", "too common"),
        ({"display_name": "   "}, "display_name", "Choose the name others will see"),
        ({"display_name": "x" * 65}, "display_name", "at most 64 characters"),
        ({"username": ""}, "username", "This field is required"),
        ({"username": "bad name!"}, "username", "Enter a valid username"),
        ({"username": "ALICE"}, "username", "already exists"),
    ],
)
def test_signup_refuses_bad_input_and_says_why(
    client: Client, alice: User, overrides: dict[str, str], field: str, message: str
) -> None:
    count = User.objects.count()
    response = client.post("/accounts/signup/", signup_data(**overrides))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert message in response.content.decode().replace("&#x27;", "'")
    assert User.objects.count() == count
    assert "_auth_user_id" not in client.session


def test_signup_when_signed_in_goes_home(client_alice: Client) -> None:
    assert client_alice.get("/accounts/signup/")["Location"] == "/"


# --- home: the rooms, and creating one -------------------------------------------


def test_home_lists_rooms_most_recently_active_first(client_alice: Client, alice: User) -> None:
    quiet = services.room_create(name="Quiet corner", created_by=alice)
    busy = services.room_create(name="Busy place", created_by=alice)
    services.room_create(name="Brand new", created_by=alice)
    services.message_post(room=quiet, author=alice, body="old news")
    services.message_post(room=busy, author=alice, body="fresh news")
    page = client_alice.get("/").content.decode()
    assert page.index("Busy place") < page.index("Quiet corner") < page.index("Brand new")
    assert 'href="/rooms/busy-place/"' in page
    assert "no messages yet" in page
    assert re.search(r"active \d+\xa0minutes ago", page)


def test_create_room_redirects_to_its_page(client_alice: Client, alice: User) -> None:
    response = client_alice.post("/", {"name": "  Weekend   plans ", "slug": "", "granularity": ""})
    room = Room.objects.get()
    assert (room.name, room.slug, room.created_by, room.granularity) == (
        "Weekend plans",
        "weekend-plans",
        alice,
        "",
    )
    assert response["Location"] == "/rooms/weekend-plans/"


def test_create_room_with_address_and_granularity(client_alice: Client) -> None:
    client_alice.post("/", {"name": "Team", "slug": "the-team", "granularity": "sentence"})
    room = Room.objects.get()
    assert (room.slug, room.granularity) == ("the-team", "sentence")


def test_create_room_takes_a_free_address_when_the_name_is_taken(
    client_alice: Client, room: Room
) -> None:
    response = client_alice.post("/", {"name": "General"})
    assert response["Location"] == "/rooms/general-2/"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": ""}, "name", "This field is required."),
        ({"name": "   "}, "name", "This field is required."),
        ({"name": "x" * 81}, "name", "A room name is at most 80 characters."),
        ({"name": "!!!"}, "name", "The room name needs letters or digits for its address."),
        ({"name": "Fine", "slug": "Not A Slug"}, "slug", "lowercase letters, digits and hyphens"),
        ({"name": "Fine", "slug": "general"}, "slug", "The address 'general' is taken."),
        ({"name": "Fine", "granularity": "paragraph"}, "granularity", "Select a valid choice"),
    ],
)
def test_create_room_refuses_bad_input_and_shows_why(
    client_alice: Client, room: Room, data: dict[str, str], field: str, message: str
) -> None:
    response = client_alice.post("/", data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert message in " ".join(errors[field]), errors
    assert message in response.content.decode().replace("&#x27;", "'")
    assert Room.objects.count() == 1


# --- the room page -------------------------------------------------------------------


def test_unknown_room_is_404(client_alice: Client) -> None:
    assert client_alice.get("/rooms/no-such-room/").status_code == 404


def articles(html: str) -> list[str]:
    return re.findall(r"<article\b.*?</article>", html, flags=re.DOTALL)


def test_room_page_renders_the_messages_with_author_time_body_and_state(
    client_alice: Client, alice: User, bob: User, room: Room
) -> None:
    services.message_post(room=room, author=bob, body="Hi **all**\n- one\n- two")
    reply = Message.objects.create(
        room=room, role=Role.ASSISTANT, status=Status.STREAMING, body="Half a", model="demo"
    )
    failed = Message.objects.create(
        room=room, role=Role.ASSISTANT, status=Status.FAILED, body="", error="Model down."
    )
    response = client_alice.get("/rooms/general/")
    html = response.content.decode()
    first, second, third = articles(html)
    assert 'data-role="user"' in first and 'data-status="done"' in first
    assert "Bob" in first and "<strong>all</strong>" in first and "<li>two</li>" in first
    assert re.search(r'<time class="msg__time" datetime="[^"]+"[^>]*>\d\d:\d\d</time>', first)
    assert f'data-message-id="{reply.pk}"' in second
    assert 'data-role="assistant"' in second and 'data-status="streaming"' in second
    assert 'aria-busy="true"' in second and "writing…" in second
    assert "demo model · no API key" in second
    assert f'data-message-id="{failed.pk}"' in third and "Failed: Model down." in third
    # The same rows as data for the page's script: message_payload, nothing else.
    data = json.loads(
        re.search(r'<script id="initial-messages" type="application/json">(.*?)</script>', html)[1]
    )
    assert [m["id"] for m in data] == list(
        Message.objects.filter(room=room).order_by("id").values_list("id", flat=True)
    )
    assert data[1]["body"] == "Half a" and data[1]["version"] == 1


def test_room_page_shows_a_pending_reply_as_thinking(
    client_alice: Client, alice: User, room: Room
) -> None:
    Message.objects.create(room=room, role=Role.ASSISTANT, status=Status.PENDING)
    (article,) = articles(client_alice.get("/rooms/general/").content.decode())
    assert 'data-status="pending"' in article and "thinking…" in article


XSS = (
    '<img src=x onerror="alert(1)"> <script>alert(2)</script> '
    "[click](javascript:alert(3)) ![pic](https://example.com/p.png) [ok](https://example.com)"
)


def test_room_page_renders_message_bodies_inert(
    client_alice: Client, alice: User, room: Room
) -> None:
    services.message_post(room=room, author=alice, body=XSS)
    html = client_alice.get("/rooms/general/").content.decode()
    (article,) = articles(html)
    assert "<img" not in article and "<script" not in article
    assert "&lt;img src=x onerror=" in article and "&lt;script&gt;alert(2)" in article
    assert "javascript:" not in article.replace("[click](javascript:alert(3))", "")
    assert (
        '<a href="https://example.com/p.png" target="_blank" rel="noopener noreferrer">pic</a>'
        in article
    )
    assert (
        '<a href="https://example.com" target="_blank" rel="noopener noreferrer">ok</a>' in article
    )
    # And in the JSON for the script, nothing can close the <script> element.
    assert "<script>alert(2)" not in html.split('id="initial-messages"')[1]


def test_room_page_has_no_inline_script_or_event_handler(
    client_alice: Client, alice: User, room: Room
) -> None:
    services.message_post(room=room, author=alice, body="hello")
    html = client_alice.get("/rooms/general/").content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert " src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.IGNORECASE)
    assert 'data-room-slug="general"' in html
    assert re.search(r'<label for="composer-body"[^>]*>Message</label>', html)
    assert re.search(r'<button type="submit"[^>]*>Send</button>', html)


def test_room_composer_without_javascript_posts_and_reloads(
    client_alice: Client, alice: User, room: Room
) -> None:
    response = client_alice.post("/rooms/general/", {"body": "no script here"})
    assert response["Location"] == "/rooms/general/"
    message = Message.objects.get()
    assert (message.author, message.body, message.role) == (alice, "no script here", Role.USER)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("   ", "The message is empty."),
        ("x" * 4001, "The message is 4001 characters; the limit is 4000."),
    ],
)
def test_room_composer_without_javascript_keeps_the_text_on_error(
    client_alice: Client, room: Room, body: str, message: str
) -> None:
    response = client_alice.post("/rooms/general/", {"body": body})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert f">{body}</textarea>" in html
    assert not Message.objects.exists()


def test_room_page_shows_the_users_display_name_and_log_out(
    client_alice: Client, room: Room
) -> None:
    html = client_alice.get("/rooms/general/").content.decode()
    assert ">Alice</span>" in html
    assert re.search(r'<form method="post" action="/accounts/logout/"', html)


def test_reverse_names(settings: Any) -> None:
    assert reverse("home") == "/"
    assert reverse("room", args=["general"]) == "/rooms/general/"
    assert reverse("signup") == "/accounts/signup/"
    assert reverse(settings.LOGIN_URL) == "/accounts/login/"
