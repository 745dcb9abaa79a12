"""The limits as the pages meet them: room creation and the no-JavaScript composer."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from messages_app.models import Message, Room, User


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.mark.django_db
def test_home_refuses_the_room_past_the_hourly_limit_with_the_wait_and_stores_nothing(
    alice_client: Client, bob: User, settings: Any
) -> None:
    settings.CHAT_ROOMS_PER_HOUR = 3
    for n in range(3):
        response = alice_client.post("/", {"name": f"Room {n}"})
        assert response.status_code == 302
    response = alice_client.post("/", {"name": "One too many"})
    assert response.status_code == 429
    page = response.content.decode()
    assert "You have created 3 rooms in the last hour, the most allowed." in page
    assert "Try again in 60 min" in page
    assert not Room.objects.filter(name="One too many").exists()
    assert Room.objects.count() == 3
    # Bob may still create one.
    bob_client = Client()
    bob_client.force_login(bob)
    assert bob_client.post("/", {"name": "Bob's"}).status_code == 302


@pytest.mark.django_db
def test_home_room_form_with_a_mistake_does_not_count(
    alice_client: Client, room: Room, settings: Any
) -> None:
    settings.CHAT_ROOMS_PER_HOUR = 1
    for _ in range(3):  # the address is taken: no room made, nothing counted
        assert alice_client.post("/", {"name": "X", "slug": room.slug}).status_code == 200
    assert alice_client.post("/", {"name": "Finally"}).status_code == 302


@pytest.mark.django_db
def test_room_page_post_past_the_burst_is_refused_with_the_wait_and_stores_nothing(
    alice_client: Client, room: Room, settings: Any
) -> None:
    settings.CHAT_POST_BURST, settings.CHAT_POST_BURST_SECONDS = 2, 10
    for n in range(2):
        assert alice_client.post(f"/rooms/{room.slug}/", {"body": f"m{n}"}).status_code == 302
    response = alice_client.post(f"/rooms/{room.slug}/", {"body": "too fast"})
    assert response.status_code == 429
    assert (
        "You are posting too fast: at most 2 messages in 10 seconds." in response.content.decode()
    )
    assert not Message.objects.filter(body="too fast").exists()
