"""Unread counts (issue 14 point 5): the read position of a membership, moved by
``services.membership_mark_read``, and the home page's counts, rooms with news first,
in one query whatever the number of rooms."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from messages_app import selectors, services
from messages_app.models import Membership, Room, User
from messages_app.protocol import ClientError

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_alice(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def post(room: Room, author: User | None, n: int = 1) -> list[int]:
    return [
        services.message_post(room=room, author=author, body=f"m{i}").message.pk  # type: ignore[arg-type]
        for i in range(n)
    ]


def unread_of(user: User) -> dict[str, int]:
    return {room.slug: room.unread for room in selectors.room_list(user)}


def badges(page: str) -> dict[str, str]:
    """slug -> the unread badge's text, for the rooms that show one."""
    found = re.findall(
        r'data-room-slug="([^"]+)">.*?(?:<span class="room-card__unread"[^>]*>([^<]+)<|</a>)',
        page,
        flags=re.S,
    )
    return {slug: text for slug, text in found if text}


def test_unread_counts_others_messages_after_the_read_position(
    alice: User, bob: User, room: Room
) -> None:
    services.membership_add(room=room, user=bob)
    first, *_ = post(room, bob, 3)
    post(room, alice, 2)  # her own: never unread for her
    assert unread_of(alice) == {"general": 3}
    services.membership_mark_read(room=room, user=alice, message_id=first)
    assert unread_of(alice) == {"general": 2}
    assert unread_of(bob) == {"general": 2}  # alice's two, after his position 0


def test_unread_leaves_out_deleted_messages_and_counts_the_assistants(
    alice: User, bob: User, room: Room
) -> None:
    services.membership_add(room=room, user=bob)
    gone, kept = post(room, bob, 2)
    services.message_delete(room=room, message_id=gone, actor=bob)
    asked = services.message_post(room=room, author=bob, body="@gpt hello?")
    assert asked.reply is not None  # an assistant row, author None: news for alice too
    assert unread_of(alice) == {"general": 3}  # kept, the question, the reply
    assert kept


def test_unread_is_zero_in_a_public_room_one_has_not_joined(
    alice: User, bob: User, room: Room
) -> None:
    post(room, alice, 2)
    assert unread_of(bob) == {"general": 0}


def test_unread_count_stops_at_the_cap_and_the_page_says_99_plus(
    client_alice: Client, alice: User, bob: User, room: Room, settings: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(selectors, "UNREAD_CAP", 5)
    post(room, bob, 7)
    assert unread_of(alice) == {"general": 5}
    monkeypatch.setattr(selectors, "UNREAD_CAP", 100)
    settings.CHAT_POST_BURST = 1000
    post(room, bob, 100)
    assert unread_of(alice) == {"general": 100}
    assert badges(client_alice.get("/").content.decode()) == {"general": "99+"}


def test_home_shows_counts_and_puts_rooms_with_news_first(
    client_alice: Client, alice: User, bob: User
) -> None:
    news = services.room_create(name="Has news", created_by=alice)
    services.membership_add(room=news, user=bob)
    post(news, bob, 3)
    quiet = services.room_create(name="Quiet but newer", created_by=alice)
    post(quiet, alice, 1)  # more recent activity, but only her own
    page = client_alice.get("/").content.decode()
    assert page.index("Has news") < page.index("Quiet but newer")
    assert badges(page) == {"has-news": "3"}
    assert "3 unread messages" in page
    # reading the room clears it and the room goes back to its place by activity
    newest = news.messages.order_by("-id").first()
    assert newest is not None
    services.membership_mark_read(room=news, user=alice, message_id=newest.pk)
    page = client_alice.get("/").content.decode()
    assert badges(page) == {}
    assert page.index("Quiet but newer") < page.index("Has news")


def test_home_reads_every_rooms_count_in_one_query(
    client_alice: Client, alice: User, bob: User, django_assert_max_num_queries: Any
) -> None:
    def queries_for_home() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client_alice.get("/").status_code == 200
        return len(captured)

    for n in range(2):
        room = services.room_create(name=f"Room {n}", created_by=alice)
        services.membership_add(room=room, user=bob)
        post(room, bob, 2)
    few = queries_for_home()
    for n in range(2, 12):
        room = services.room_create(name=f"Room {n}", created_by=alice)
        services.membership_add(room=room, user=bob)
        post(room, bob, 2)
    with django_assert_max_num_queries(few):
        page = client_alice.get("/").content.decode()
    assert len(badges(page)) == 12


def test_mark_read_moves_forward_only(alice: User, bob: User, room: Room) -> None:
    first, last = post(room, bob, 2)
    assert services.membership_mark_read(room=room, user=alice, message_id=last) == last
    assert services.membership_mark_read(room=room, user=alice, message_id=first) == last
    assert Membership.objects.get(room=room, user=alice).last_read_id == last


@pytest.mark.parametrize("which", ["other_room", "missing"])
def test_mark_read_of_a_message_not_in_the_room_is_not_found(
    alice: User, room: Room, which: str
) -> None:
    other = services.room_create(name="Elsewhere", created_by=alice)
    (there,) = post(other, alice)
    message_id = there if which == "other_room" else there + 1000
    with pytest.raises(ClientError) as raised:
        services.membership_mark_read(room=room, user=alice, message_id=message_id)
    assert raised.value.code == "not_found"
    assert set(Membership.objects.values_list("last_read_id", flat=True)) == {0}


def test_mark_read_by_a_non_member_is_refused_and_by_staff_does_nothing(
    alice: User, bob: User, room: Room, make_user: Any
) -> None:
    (message_id,) = post(room, alice)
    with pytest.raises(ClientError) as raised:
        services.membership_mark_read(room=room, user=bob, message_id=message_id)
    assert raised.value.code == "not_member"
    staff = make_user("staffer", "Staff")
    staff.is_staff = True
    staff.save()
    assert services.membership_mark_read(room=room, user=staff, message_id=message_id) == 0
    assert not Membership.objects.filter(user__in=[bob, staff]).exists()
