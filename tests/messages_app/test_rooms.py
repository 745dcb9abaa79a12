"""Membership, invites, deletes and the bad input of issue 9, at the services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from messages_app import services
from messages_app.models import MemberRole, Membership, Message, Role, Room, Status, User
from messages_app.protocol import ClientError

pytestmark = pytest.mark.django_db


def roles(room: Room) -> dict[str, str]:
    return dict(room.memberships.values_list("user__username", "role"))


@pytest.fixture
def private(alice: User) -> Room:
    return services.room_create(name="Secret", created_by=alice, visibility="private")


def test_room_create_makes_the_creator_its_owner(alice: User) -> None:
    room = services.room_create(name="Plans", created_by=alice)
    assert (room.visibility, roles(room)) == ("public", {"alice": "owner"})


def test_room_create_refuses_an_unknown_visibility_and_stores_nothing(alice: User) -> None:
    with pytest.raises(ClientError) as raised:
        services.room_create(name="Plans", created_by=alice, visibility="secret")
    assert raised.value.code == "invalid_visibility"
    assert not Room.objects.exists()


@pytest.mark.parametrize("field", ["name", "slug"])
def test_room_create_refuses_lone_surrogates_in_names(alice: User, field: str) -> None:
    kwargs: dict[str, Any] = {"name": "Plans", "slug": ""}
    kwargs[field] = "bad\ud800"
    with pytest.raises(ClientError) as raised:
        services.room_create(created_by=alice, **kwargs)
    assert raised.value.code == ("invalid_name" if field == "name" else "invalid_slug")
    assert not Room.objects.exists()


def test_user_create_refuses_lone_surrogates_in_the_display_name() -> None:
    with pytest.raises(ClientError) as raised:
        services.user_create(username="zed", password="a-Strong-pass-9", display_name="Z\udfff")
    assert raised.value.code == "invalid_text"
    assert not User.objects.filter(username="zed").exists()


def test_message_post_refuses_a_body_with_a_lone_surrogate(room: Room, alice: User) -> None:
    with pytest.raises(ClientError) as raised:
        services.message_post(room=room, author=alice, body="hi \ud83d there")
    assert raised.value.code == "invalid_text"
    assert not Message.objects.exists()


def test_message_post_refuses_a_client_id_already_used_in_another_room(
    room: Room, alice: User
) -> None:
    other = services.room_create(name="Other", created_by=alice)
    client_id = "6f1c1c1e-0000-4000-8000-000000000001"
    services.message_post(room=other, author=alice, body="first", client_id=client_id)
    with pytest.raises(ClientError) as raised:
        services.message_post(room=room, author=alice, body="second", client_id=client_id)
    assert raised.value.code == "client_id_reused"
    assert list(Message.objects.values_list("room__slug", "body")) == [("other", "first")]


# --- roles -------------------------------------------------------------------------


def test_membership_set_role_promotes_and_demotes(private: Room, alice: User, bob: User) -> None:
    services.membership_add(room=private, user=bob)
    services.membership_set_role(room=private, user_id=bob.pk, role="moderator", actor=alice)
    assert roles(private)["bob"] == "moderator"
    services.membership_set_role(room=private, user_id=bob.pk, role="member", actor=alice)
    assert roles(private)["bob"] == "member"


@pytest.mark.parametrize("role", ["admin", "", None, 3, "Owner"])
def test_membership_set_role_refuses_unknown_roles(
    private: Room, alice: User, bob: User, role: Any
) -> None:
    services.membership_add(room=private, user=bob)
    with pytest.raises(ClientError) as raised:
        services.membership_set_role(room=private, user_id=bob.pk, role=role, actor=alice)
    assert raised.value.code == "invalid_role"
    assert roles(private) == {"alice": "owner", "bob": "member"}


def test_membership_set_role_refuses_a_moderator(
    private: Room, alice: User, bob: User, make_user: Any
) -> None:
    carol = make_user("carol")
    services.membership_add(room=private, user=bob, role=MemberRole.MODERATOR)
    services.membership_add(room=private, user=carol)
    with pytest.raises(ClientError) as raised:
        services.membership_set_role(room=private, user_id=carol.pk, role="owner", actor=bob)
    assert raised.value.code == "forbidden"
    assert roles(private)["carol"] == "member"


def test_membership_set_role_refuses_to_demote_the_last_owner(private: Room, alice: User) -> None:
    with pytest.raises(ClientError) as raised:
        services.membership_set_role(room=private, user_id=alice.pk, role="member", actor=alice)
    assert raised.value.code == "last_owner"
    assert roles(private) == {"alice": "owner"}


def test_membership_leave_hands_over_only_after_another_owner_exists(
    private: Room, alice: User, bob: User
) -> None:
    services.membership_add(room=private, user=bob)
    with pytest.raises(ClientError) as raised:
        services.membership_leave(room=private, user=alice)
    assert raised.value.code == "last_owner"
    services.membership_set_role(room=private, user_id=bob.pk, role="owner", actor=alice)
    services.membership_leave(room=private, user=alice)
    assert roles(private) == {"bob": "owner"}


def test_membership_leave_twice_says_not_a_member(private: Room, alice: User, bob: User) -> None:
    services.membership_add(room=private, user=bob)
    services.membership_leave(room=private, user=bob)
    with pytest.raises(ClientError) as raised:
        services.membership_leave(room=private, user=bob)
    assert raised.value.code == "not_member"


def test_membership_remove_by_owner_and_moderator_within_their_rights(
    private: Room, alice: User, bob: User, make_user: Any
) -> None:
    carol, dan = make_user("carol"), make_user("dan")
    services.membership_add(room=private, user=bob, role=MemberRole.MODERATOR)
    services.membership_add(room=private, user=carol)
    services.membership_add(room=private, user=dan)
    services.membership_remove(room=private, user_id=carol.pk, actor=bob)
    with pytest.raises(ClientError) as raised:
        services.membership_remove(room=private, user_id=alice.pk, actor=bob)
    assert raised.value.code == "forbidden"
    with pytest.raises(ClientError) as raised:
        services.membership_remove(room=private, user_id=bob.pk, actor=dan)
    assert raised.value.code == "forbidden"
    services.membership_remove(room=private, user_id=bob.pk, actor=alice)
    assert roles(private) == {"alice": "owner", "dan": "member"}


def test_membership_remove_refuses_the_last_owner_even_for_staff(
    private: Room, alice: User, make_user: Any
) -> None:
    staff = make_user("root")
    staff.is_staff = True
    staff.save()
    with pytest.raises(ClientError) as raised:
        services.membership_remove(room=private, user_id=alice.pk, actor=staff)
    assert raised.value.code == "last_owner"
    assert roles(private) == {"alice": "owner"}


@pytest.mark.parametrize("user_id", ["1", None, True, 999999])
def test_membership_remove_refuses_bad_or_unknown_users(
    private: Room, alice: User, user_id: Any
) -> None:
    with pytest.raises(ClientError) as raised:
        services.membership_remove(room=private, user_id=user_id, actor=alice)
    assert raised.value.code in {"invalid_id", "not_member"}
    assert roles(private) == {"alice": "owner"}


def test_membership_changes_broadcast_the_member_list_after_commit(
    private: Room,
    alice: User,
    bob: User,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sent: list[tuple[int, dict[str, Any]]] = []
    monkeypatch.setattr(services.events, "send_to_room", lambda rid, ev: sent.append((rid, ev)))
    with django_capture_on_commit_callbacks(execute=True):
        services.membership_add(room=private, user=bob)
    assert len(sent) == 1
    room_id, event = sent[0]
    assert room_id == private.pk
    assert '"type":"members"' in event["frame"] and '"Bob"' in event["frame"]


# --- invites -----------------------------------------------------------------------


def test_invite_accept_makes_a_member_once(private: Room, alice: User, bob: User) -> None:
    token = services.room_invite_reset(room=private, actor=alice).invite_token
    assert services.invite_accept(token=token, user=bob) == (private, True)
    assert services.invite_accept(token=token, user=bob) == (private, False)
    assert roles(private) == {"alice": "owner", "bob": "member"}


def test_room_invite_reset_revokes_the_old_link(private: Room, alice: User, bob: User) -> None:
    old = services.room_invite_reset(room=private, actor=alice).invite_token
    new = services.room_invite_reset(room=private, actor=alice).invite_token
    assert old != new
    with pytest.raises(ClientError) as raised:
        services.invite_accept(token=old, user=bob)
    assert raised.value.code == "invalid_invite"
    assert "bob" not in roles(private)


def test_room_invite_reset_refuses_plain_members(private: Room, bob: User) -> None:
    services.membership_add(room=private, user=bob)
    with pytest.raises(ClientError) as raised:
        services.room_invite_reset(room=private, actor=bob)
    assert raised.value.code == "forbidden"
    assert Room.objects.get(pk=private.pk).invite_token is None


def test_invite_expires_after_chat_invite_hours(
    private: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.CHAT_INVITE_HOURS = 2
    room = services.room_invite_reset(room=private, actor=alice)
    assert room.invite_expires_at is not None
    Room.objects.filter(pk=room.pk).update(invite_expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ClientError) as raised:
        services.invite_accept(token=room.invite_token, user=bob)
    assert raised.value.code == "invite_expired"
    assert "bob" not in roles(private)


def test_invite_never_expires_with_zero_hours(private: Room, alice: User, settings: Any) -> None:
    settings.CHAT_INVITE_HOURS = 0
    assert services.room_invite_reset(room=private, actor=alice).invite_expires_at is None


@pytest.mark.parametrize("token", ["", "x" * 65, "nope", None, 7, "a\x00b", "\ud800"])
def test_invite_accept_refuses_wrong_tokens_and_changes_nothing(
    private: Room, bob: User, token: Any
) -> None:
    with pytest.raises(ClientError) as raised:
        services.invite_accept(token=token, user=bob)
    assert raised.value.code == "invalid_invite"
    assert Membership.objects.filter(user=bob).count() == 0


# --- deleting ----------------------------------------------------------------------


def test_message_delete_leaves_a_tombstone(room: Room, alice: User) -> None:
    posted = services.message_post(room=room, author=alice, body="oops, my password").message
    deleted = services.message_delete(message_id=posted.pk, actor=alice)
    row = Message.objects.get(pk=posted.pk)
    assert (row.body, row.deleted_by, row.version) == ("", alice, posted.version + 1)
    assert row.deleted_at is not None and deleted.pk == posted.pk
    assert not Message.objects.filter(body__contains="password").exists()


def test_message_delete_of_a_streaming_reply_cancels_it_first(
    room: Room, alice: User, make_user: Any
) -> None:
    asked = services.message_post(room=room, author=alice, body="@gpt hello")
    assert asked.reply is not None
    services.reply_claim(message_id=asked.reply.pk, model="demo")
    row = services.message_delete(message_id=asked.reply.pk, actor=alice)
    assert (row.status, row.body, row.deleted_by) == (Status.CANCELLED, "", alice)


def test_message_delete_refuses_others_twice_and_foreign_rooms(
    room: Room, alice: User, bob: User
) -> None:
    services.membership_add(room=room, user=bob)
    posted = services.message_post(room=room, author=alice, body="keep me").message
    with pytest.raises(ClientError) as raised:
        services.message_delete(message_id=posted.pk, actor=bob)
    assert raised.value.code == "forbidden"
    other = services.room_create(name="Other", created_by=bob)
    with pytest.raises(ClientError) as raised:
        services.message_delete(message_id=posted.pk, actor=alice, room=other)
    assert raised.value.code == "not_found"
    assert Message.objects.get(pk=posted.pk).body == "keep me"
    services.message_delete(message_id=posted.pk, actor=alice)
    with pytest.raises(ClientError) as raised:
        services.message_delete(message_id=posted.pk, actor=alice)
    assert raised.value.code == "already_deleted"


def test_message_delete_by_a_member_who_left_is_refused(room: Room, alice: User, bob: User) -> None:
    services.membership_add(room=room, user=bob)
    posted = services.message_post(room=room, author=bob, body="mine").message
    services.membership_leave(room=room, user=bob)
    with pytest.raises(ClientError) as raised:
        services.message_delete(message_id=posted.pk, actor=bob)
    assert raised.value.code == "not_member"
    assert Message.objects.get(pk=posted.pk).body == "mine"


def test_reply_cancel_by_someone_else_is_forbidden(room: Room, alice: User, bob: User) -> None:
    services.membership_add(room=room, user=bob)
    asked = services.message_post(room=room, author=alice, body="@gpt hi")
    assert asked.reply is not None
    with pytest.raises(ClientError) as raised:
        services.reply_cancel(room=room, message_id=asked.reply.pk, actor=bob)
    assert raised.value.code == "forbidden"
    assert Message.objects.get(pk=asked.reply.pk).status == Status.PENDING
    services.reply_cancel(room=room, message_id=asked.reply.pk, actor=alice)
    assert Message.objects.get(pk=asked.reply.pk).status == Status.CANCELLED


def test_room_delete_cascades_for_owners_only(room: Room, alice: User, bob: User) -> None:
    services.membership_add(room=room, user=bob)
    services.message_post(room=room, author=bob, body="hello")
    with pytest.raises(ClientError):
        services.room_delete(room=room, actor=bob)
    services.room_delete(room=room, actor=alice)
    assert (Room.objects.count(), Message.objects.count(), Membership.objects.count()) == (0, 0, 0)


def test_assistant_rows_cannot_be_deleted_by_the_asker(room: Room, alice: User, bob: User) -> None:
    services.membership_add(room=room, user=bob)
    asked = services.message_post(room=room, author=bob, body="@gpt hi")
    assert asked.reply is not None and asked.reply.role == Role.ASSISTANT
    with pytest.raises(ClientError) as raised:
        services.message_delete(message_id=asked.reply.pk, actor=bob)
    assert raised.value.code == "forbidden"


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(services.events, "user_sockets_close", lambda **kw: calls.append(kw))
    return calls


def test_membership_remove_and_leave_close_the_users_sockets_of_the_room_after_commit(
    private: Room,
    alice: User,
    bob: User,
    make_user: Any,
    closes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    carol = make_user("carol")
    services.membership_add(room=private, user=bob)
    services.membership_add(room=private, user=carol)
    with django_capture_on_commit_callbacks(execute=True):
        services.membership_remove(room=private, user_id=bob.pk, actor=alice)
        services.membership_leave(room=private, user=carol)
    assert closes == [
        {"user_id": bob.pk, "code": 4403, "room_id": private.pk},
        {"user_id": carol.pk, "code": 4403, "room_id": private.pk},
    ]


def test_membership_remove_refused_closes_nothing(
    private: Room,
    alice: User,
    closes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ClientError):
        services.membership_leave(room=private, user=alice)
    assert closes == []


def test_room_delete_closes_its_members_sockets_with_4404(
    private: Room,
    alice: User,
    bob: User,
    closes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    services.membership_add(room=private, user=bob)
    room_id = private.pk
    with django_capture_on_commit_callbacks(execute=True):
        services.room_delete(room=private, actor=alice)
    assert sorted(c["user_id"] for c in closes) == sorted([alice.pk, bob.pk])
    assert {(c["code"], c["room_id"]) for c in closes} == {(4404, room_id)}
