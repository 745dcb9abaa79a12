"""The pages of issue 9: visibility, invites, the members panel, CHAT_SIGNUP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from messages_app import services
from messages_app.models import Membership, Message, Room, User
from tests.messages_app.test_views import PASSWORD, signup_data

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def roles(room: Room) -> dict[str, str]:
    return dict(room.memberships.values_list("user__username", "role"))


@pytest.fixture
def private(alice: User) -> Room:
    room = services.room_create(name="Secret plans", created_by=alice, visibility="private")
    return services.room_invite_reset(room=room, actor=alice)


# --- visibility --------------------------------------------------------------------


def test_home_lists_public_rooms_and_only_my_private_ones(
    room: Room, private: Room, alice: User, bob: User
) -> None:
    assert "Secret plans" in signed_in(alice).get("/").content.decode()
    page = signed_in(bob).get("/").content.decode()
    assert "General" in page and "Secret plans" not in page


def test_private_room_page_is_404_for_non_members_and_changes_nothing(
    private: Room, bob: User
) -> None:
    client = signed_in(bob)
    assert client.get("/rooms/secret-plans/").status_code == 404
    assert client.post("/rooms/secret-plans/", {"body": "let me in"}).status_code == 404
    assert client.get("/rooms/secret-plans/members/").status_code == 404
    assert not Message.objects.exists()
    assert "bob" not in roles(private)


def test_opening_a_public_room_joins_it(room: Room, bob: User) -> None:
    assert signed_in(bob).get("/rooms/general/").status_code == 200
    assert roles(room) == {"alice": "owner", "bob": "member"}


def test_home_creates_a_private_room_owned_by_its_creator(alice: User, bob: User) -> None:
    response = signed_in(alice).post("/", {"name": "Hidden", "visibility": "private"})
    assert response.status_code == 302
    room = Room.objects.get(slug="hidden")
    assert (room.visibility, roles(room)) == ("private", {"alice": "owner"})
    assert signed_in(bob).get("/rooms/hidden/").status_code == 404


def test_home_refuses_an_unknown_visibility(alice: User) -> None:
    response = signed_in(alice).post("/", {"name": "Hidden", "visibility": "secret"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Room.objects.exists()


# --- invites -----------------------------------------------------------------------


def test_invite_link_is_shown_to_owners_and_moderators_only(
    private: Room, alice: User, bob: User
) -> None:
    link = f"/invite/{private.invite_token}/"
    assert link in signed_in(alice).get("/rooms/secret-plans/").content.decode()
    services.membership_add(room=private, user=bob)
    assert link not in signed_in(bob).get("/rooms/secret-plans/").content.decode()
    services.membership_set_role(room=private, user_id=bob.pk, role="moderator", actor=alice)
    assert link in signed_in(bob).get("/rooms/secret-plans/").content.decode()


def test_invite_signed_in_joins_and_goes_to_the_room(private: Room, bob: User) -> None:
    response = signed_in(bob).get(f"/invite/{private.invite_token}/")
    assert response.status_code == 302 and response["Location"] == "/rooms/secret-plans/"
    assert roles(private)["bob"] == "member"


def test_invite_signed_out_keeps_the_token_across_login(private: Room, bob: User) -> None:
    client = Client()
    link = f"/invite/{private.invite_token}/"
    page = client.get(link)
    assert page.status_code == 200 and "You are invited to Secret plans" in page.content.decode()
    assert "bob" not in roles(private)
    login = client.post("/accounts/login/", {"username": "bob", "password": PASSWORD, "next": link})
    assert login["Location"] == link
    assert client.get(link)["Location"] == "/rooms/secret-plans/"
    assert roles(private)["bob"] == "member"


def test_invite_signed_out_then_signup_joins(private: Room, settings: Any) -> None:
    settings.CHAT_SIGNUP = "invite"
    client = Client()
    link = f"/invite/{private.invite_token}/"
    assert "Sign up and join" in client.get(link).content.decode()
    response = client.post("/accounts/signup/", {**signup_data(), "next": link})
    assert response.status_code == 302 and response["Location"] == link
    assert client.get(link)["Location"] == "/rooms/secret-plans/"
    assert roles(private)["carol"] == "member"


@pytest.mark.parametrize("kind", ["wrong", "revoked", "expired"])
def test_invite_bad_tokens_show_why_and_change_nothing(
    private: Room, alice: User, bob: User, kind: str
) -> None:
    token = private.invite_token
    if kind == "wrong":
        token = "not-a-token"
    elif kind == "revoked":
        services.room_invite_reset(room=private, actor=alice)
    else:
        Room.objects.filter(pk=private.pk).update(
            invite_expires_at=timezone.now() - timedelta(minutes=1)
        )
    response = signed_in(bob).get(f"/invite/{token}/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "This invite link does not work" in page
    assert ("expired" in page) == (kind == "expired")
    assert "bob" not in roles(private)


def test_invite_reset_by_a_plain_member_is_refused(private: Room, bob: User) -> None:
    services.membership_add(room=private, user=bob)
    old = private.invite_token
    response = signed_in(bob).post("/rooms/secret-plans/invite/", follow=True)
    assert "Only the room" in response.content.decode()
    assert Room.objects.get(pk=private.pk).invite_token == old


def test_invite_reset_by_the_owner_revokes_the_old_link(private: Room, alice: User) -> None:
    old = private.invite_token
    signed_in(alice).post("/rooms/secret-plans/invite/")
    assert Room.objects.get(pk=private.pk).invite_token not in (None, old)


# --- the members panel -------------------------------------------------------------


def test_members_panel_lists_members_with_roles(private: Room, alice: User, bob: User) -> None:
    services.membership_add(room=private, user=bob)
    page = signed_in(bob).get("/rooms/secret-plans/members/").content.decode()
    assert 'data-role="owner"' in page and 'data-role="member"' in page
    assert "Alice" in page and "Bob" in page
    assert 'data-action="remove"' not in page  # a plain member removes no one


def test_members_panel_owner_promotes_removes_and_bad_roles_are_refused(
    private: Room, alice: User, bob: User
) -> None:
    services.membership_add(room=private, user=bob)
    client = signed_in(alice)
    action = "/rooms/secret-plans/members/action/"
    page = client.post(action, {"action": "role", "user_id": bob.pk, "role": "boss"}, follow=True)
    assert "Unknown role" in page.content.decode()
    assert roles(private)["bob"] == "member"
    client.post(action, {"action": "role", "user_id": bob.pk, "role": "moderator"})
    assert roles(private)["bob"] == "moderator"
    client.post(action, {"action": "remove", "user_id": bob.pk})
    assert roles(private) == {"alice": "owner"}
    assert signed_in(bob).get("/rooms/secret-plans/").status_code == 404


def test_members_panel_last_owner_cannot_leave(private: Room, alice: User) -> None:
    page = signed_in(alice).post(
        "/rooms/secret-plans/members/action/", {"action": "leave"}, follow=True
    )
    assert "last owner" in page.content.decode()
    assert roles(private) == {"alice": "owner"}


def test_members_panel_member_leaves_and_loses_the_private_room(private: Room, bob: User) -> None:
    services.membership_add(room=private, user=bob)
    client = signed_in(bob)
    response = client.post("/rooms/secret-plans/members/action/", {"action": "leave"})
    assert response["Location"] == "/"
    assert "bob" not in roles(private)
    assert client.get("/rooms/secret-plans/").status_code == 404


@pytest.mark.parametrize(
    "data", [{"action": "fly"}, {"action": "remove", "user_id": "x"}, {"action": "remove"}]
)
def test_members_panel_bad_actions_change_nothing(
    private: Room, alice: User, data: dict[str, str]
) -> None:
    response = signed_in(alice).post("/rooms/secret-plans/members/action/", data, follow=True)
    assert response.status_code == 200
    assert roles(private) == {"alice": "owner"}
    assert Membership.objects.count() == 1


# --- CHAT_SIGNUP -------------------------------------------------------------------


def test_signup_open_lets_anyone_sign_up(client: Client, settings: Any) -> None:
    settings.CHAT_SIGNUP = "open"
    assert client.post("/accounts/signup/", signup_data()).status_code == 302
    assert User.objects.filter(username="carol").exists()


def test_signup_invite_refuses_a_visitor_without_an_invite(client: Client, settings: Any) -> None:
    settings.CHAT_SIGNUP = "invite"
    page = client.get("/accounts/signup/")
    assert page.status_code == 403 and "by invitation" in page.content.decode()
    assert client.post("/accounts/signup/", signup_data()).status_code == 403
    assert not User.objects.filter(username="carol").exists()
    assert "with a room invite" in client.get("/accounts/login/").content.decode()


def test_signup_invite_refuses_a_revoked_invite_held_in_the_session(
    client: Client, private: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SIGNUP = "invite"
    client.get(f"/invite/{private.invite_token}/")
    services.room_invite_reset(room=private, actor=alice)
    assert client.post("/accounts/signup/", signup_data()).status_code == 403
    assert not User.objects.filter(username="carol").exists()


def test_signup_closed_has_no_signup_page(client: Client, settings: Any) -> None:
    settings.CHAT_SIGNUP = "closed"
    assert client.get("/accounts/signup/").status_code == 404
    assert client.post("/accounts/signup/", signup_data()).status_code == 404
    assert not User.objects.filter(username="carol").exists()
    assert "/accounts/signup/" not in client.get("/accounts/login/").content.decode()


# --- deleted messages on the page ----------------------------------------------------


def test_room_page_shows_a_deleted_message_as_such(room: Room, alice: User) -> None:
    posted = services.message_post(room=room, author=alice, body="top secret words").message
    services.message_delete(message_id=posted.pk, actor=alice)
    page = signed_in(alice).get("/rooms/general/").content.decode()
    assert "message deleted" in page and "top secret words" not in page
