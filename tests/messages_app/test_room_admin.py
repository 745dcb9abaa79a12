"""The admin and issue 9: deletes through the services, rooms with their members."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from messages_app import services
from messages_app.models import Membership, Message, Room, Status, User
from tests.messages_app.test_admin import act, notices

pytestmark = pytest.mark.django_db


def test_admin_delete_action_tombstones_through_the_service(
    admin_client: Client, admin_user: User, room: Room, alice: User
) -> None:
    posted = services.message_post(room=room, author=alice, body="private words").message
    asked = services.message_post(room=room, author=alice, body="@gpt go")
    assert asked.reply is not None
    response = act(admin_client, "delete_messages", posted, asked.reply)
    assert ("success", f"Deleted 2: #{posted.pk}, #{asked.reply.pk}.") in notices(response)
    row = Message.objects.get(pk=posted.pk)
    assert (row.body, row.deleted_by) == ("", admin_user)
    assert Message.objects.get(pk=asked.reply.pk).status == Status.CANCELLED
    again = act(admin_client, "delete_messages", posted)
    assert ("error", f"#{posted.pk}: Message {posted.pk} is already deleted.") in notices(again)


def test_admin_room_delete_cascades_through_the_service(
    admin_client: Client, room: Room, alice: User
) -> None:
    services.message_post(room=room, author=alice, body="bye")
    url = reverse("admin:messages_app_room_delete", args=[room.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert (Room.objects.count(), Message.objects.count(), Membership.objects.count()) == (0, 0, 0)


def test_admin_room_page_shows_members_read_only(
    admin_client: Client, room: Room, bob: User
) -> None:
    services.membership_add(room=room, user=bob)
    page = admin_client.get(reverse("admin:messages_app_room_change", args=[room.pk]))
    text = page.content.decode()
    assert "Alice (alice): owner" in text and "Bob (bob): member" in text
    assert 'name="role"' not in text  # read-only: no form field


def test_admin_room_add_without_visibility_makes_a_public_room(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:messages_app_room_add"), {"name": "Ops", "slug": "ops", "granularity": ""}
    )
    assert response.status_code == 302
    assert Room.objects.get(slug="ops").visibility == "public"


def test_admin_room_add_refuses_an_unknown_visibility(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:messages_app_room_add"),
        {"name": "Ops", "slug": "ops", "granularity": "", "visibility": "hidden"},
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Room.objects.exists()


def test_admin_user_delete_stays_off(admin_client: Client, alice: User) -> None:
    url = reverse("admin:messages_app_user_delete", args=[alice.pk])
    assert admin_client.get(url).status_code == 403
    assert User.objects.filter(pk=alice.pk).exists()


def test_admin_is_refused_to_non_staff(client: Client, alice: User, room: Room) -> Any:
    client.force_login(alice)
    response = client.get(reverse("admin:messages_app_room_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_retry_refuses_a_deleted_reply(admin_client: Client, room: Room, alice: User) -> None:
    asked = services.message_post(room=room, author=alice, body="@gpt go")
    assert asked.reply is not None
    services.message_delete(message_id=asked.reply.pk, actor=alice)
    response = act(admin_client, "retry_failed_replies", asked.reply)
    assert ("error", f"#{asked.reply.pk}: Message {asked.reply.pk} is deleted.") in notices(
        response
    )
    row = Message.objects.get(pk=asked.reply.pk)
    assert (row.status, row.body) == (Status.CANCELLED, "")


def test_admin_message_page_says_who_deleted_it(
    admin_client: Client, room: Room, alice: User
) -> None:
    posted = services.message_post(room=room, author=alice, body="gone soon").message
    services.message_delete(message_id=posted.pk, actor=alice)
    page = admin_client.get(reverse("admin:messages_app_message_change", args=[posted.pk]))
    text = page.content.decode()
    assert "Deleted" in text and "alice" in text and "gone soon" not in text
