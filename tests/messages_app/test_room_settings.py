"""A room's own settings for its assistants (issue 13): who may change them, the
limits, the page, and the admin's view of assistants and their usage."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from messages_app import permissions, services
from messages_app.models import Assistant, MemberRole, Membership, Message, Role, Room, User
from messages_app.protocol import ClientError
from tests.messages_app.test_permissions import ACTORS, _setup

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_gpt")]

# can_configure_assistants, by actor: the same in a public and a private room.
CONFIGURE = {
    "owner": True,
    "moderator": True,
    "member": False,
    "asker": False,
    "author": False,
    "non-member": False,
    "staff": True,
}


@pytest.mark.parametrize("visibility", ["public", "private"])
def test_permissions_configure_assistants_table(visibility: str) -> None:
    room, users, _objects = _setup(visibility)
    got = {
        name: permissions.can_configure_assistants(
            users[name], room, permissions.role_of(users[name], room)
        )
        for name in ACTORS
    }
    assert got == CONFIGURE
    inactive = users["owner"]
    inactive.is_active = False
    assert not permissions.can_configure_assistants(inactive, room, MemberRole.OWNER)


@pytest.fixture
def moderator(make_user: Any, room: Room) -> User:
    user = make_user("mod", "Mo")
    Membership.objects.create(room=room, user=user, role=MemberRole.MODERATOR)
    return user


@pytest.fixture
def member(make_user: Any, room: Room) -> User:
    user = make_user("mem", "Mem")
    Membership.objects.create(room=room, user=user, role=MemberRole.MEMBER)
    return user


def settings_of(room: Room) -> tuple[str, int | None, str]:
    room.refresh_from_db()
    return (room.assistant_instructions, room.context_messages, room.granularity)


# --- the service ----------------------------------------------------------------------


def test_room_settings_update_by_a_moderator_sets_all_three(room: Room, moderator: User) -> None:
    services.room_assistant_settings_update(
        room=room,
        actor=moderator,
        instructions="  Answer in French.\r\nBe brief.  ",
        context_messages=5,
        granularity="sentence",
    )
    assert settings_of(room) == ("Answer in French.\nBe brief.", 5, "sentence")
    assert room.effective_context_messages == 5


def test_room_settings_update_by_a_plain_member_is_forbidden(room: Room, member: User) -> None:
    with pytest.raises(ClientError) as raised:
        services.room_assistant_settings_update(
            room=room, actor=member, instructions="Be rude.", context_messages=None, granularity=""
        )
    assert raised.value.code == "forbidden"
    assert settings_of(room) == ("", None, "")


@pytest.mark.parametrize(
    ("instructions", "context_messages", "granularity", "code"),
    [
        ("x" * 51, None, "", "instructions_too_long"),
        ("\ud800", None, "", "invalid_text"),
        (5, None, "", "invalid_text"),
        ("ok", 0, "", "invalid_context_messages"),
        ("ok", 11, "", "invalid_context_messages"),
        ("ok", "5", "", "invalid_context_messages"),
        ("ok", True, "", "invalid_context_messages"),
        ("ok", None, "paragraph", "invalid_granularity"),
    ],
)
def test_room_settings_update_refuses_bad_values_and_changes_nothing(
    room: Room,
    alice: User,
    settings: Any,
    instructions: Any,
    context_messages: Any,
    granularity: Any,
    code: str,
) -> None:
    settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS = 50
    settings.CHAT_ROOM_CONTEXT_MESSAGES_MAX = 10
    with pytest.raises(ClientError) as raised:
        services.room_assistant_settings_update(
            room=room,
            actor=alice,
            instructions=instructions,
            context_messages=context_messages,
            granularity=granularity,
        )
    assert raised.value.code == code
    assert settings_of(room) == ("", None, "")


def test_room_settings_instructions_at_the_limit_are_kept(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS = 50
    services.room_assistant_settings_update(
        room=room, actor=alice, instructions="x" * 50, context_messages=10, granularity=""
    )
    assert settings_of(room) == ("x" * 50, 10, "")


# --- the page -------------------------------------------------------------------------


def client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_room_settings_page_saves_a_moderators_form(room: Room, moderator: User) -> None:
    client = client_of(moderator)
    url = reverse("room_settings", args=[room.slug])
    assert client.get(url).status_code == 200
    response = client.post(
        url, {"instructions": "Speak like a pirate.", "context_messages": "12", "granularity": ""}
    )
    assert response.status_code == 302 and response["Location"] == f"/rooms/{room.slug}/"
    assert settings_of(room) == ("Speak like a pirate.", 12, "")


def test_room_settings_page_shows_the_limit_as_a_form_error(
    room: Room, moderator: User, settings: Any
) -> None:
    settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS = 20
    response = client_of(moderator).post(
        reverse("room_settings", args=[room.slug]),
        {"instructions": "y" * 21, "context_messages": "", "granularity": ""},
    )
    assert response.status_code == 400
    assert "The instructions are 21 characters; the limit is 20." in response.content.decode()
    assert settings_of(room) == ("", None, "")


@pytest.mark.parametrize(
    "data",
    [
        {"instructions": "", "context_messages": "many", "granularity": ""},
        {"instructions": "", "context_messages": "100000", "granularity": ""},
        {"instructions": "", "context_messages": "-1", "granularity": ""},
        {"instructions": "", "context_messages": "", "granularity": "everything"},
    ],
)
def test_room_settings_page_refuses_bad_fields(
    room: Room, moderator: User, data: dict[str, str]
) -> None:
    response = client_of(moderator).post(reverse("room_settings", args=[room.slug]), data)
    assert response.status_code == 400
    assert 'class="field field--error"' in response.content.decode()
    assert settings_of(room) == ("", None, "")


def test_room_settings_page_is_forbidden_to_a_member(room: Room, member: User) -> None:
    client = client_of(member)
    url = reverse("room_settings", args=[room.slug])
    assert client.get(url).status_code == 403
    assert client.post(url, {"instructions": "x", "granularity": ""}).status_code == 403
    assert settings_of(room) == ("", None, "")
    # The room page offers the link only to those who may use it.
    assert 'id="room-settings-link"' not in client.get(f"/rooms/{room.slug}/").content.decode()
    page = client_of(room.created_by).get(f"/rooms/{room.slug}/").content.decode()  # type: ignore[arg-type]
    assert 'id="room-settings-link"' in page


def test_room_settings_page_of_a_private_room_is_not_found_for_others(
    room: Room, make_user: Any
) -> None:
    Room.objects.filter(pk=room.pk).update(visibility="private")
    stranger = make_user("stranger")
    assert client_of(stranger).get(reverse("room_settings", args=[room.slug])).status_code == 404


def test_room_page_renders_the_handles_and_the_mention_candidates(room: Room, alice: User) -> None:
    Assistant.objects.create(handle="claude", name="Claude")
    page = client_of(alice).get(f"/rooms/{room.slug}/").content.decode()
    assert '<script id="assistant-handles" type="application/json">["claude", "gpt"]</script>' in (
        page
    )
    assert '"kind": "member", "handle": "alice", "name": "Alice"' in page


# --- the admin ------------------------------------------------------------------------


def test_admin_lists_assistants_with_their_usage_and_estimated_cost(
    admin_client: Client, room: Room, alice: User
) -> None:
    claude = Assistant.objects.create(
        handle="claude",
        name="Claude",
        input_price_per_million="3",
        output_price_per_million="15",
    )
    question = Message.objects.create(room=room, author=alice, body="@claude hi")
    for prompt, completion in ((1000, 200), (3000, 800)):
        Message.objects.create(
            room=room,
            role=Role.ASSISTANT,
            reply_to=question,
            assistant=claude,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
        )
    response = admin_client.get(reverse("admin:messages_app_assistant_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    # 4000 prompt tokens at 3 per million + 1000 completion tokens at 15 per million.
    row = page[page.index(">claude<") :]
    row = row[: row.index("</tr>")]
    for cell in ("Claude", ">2<", ">4000<", ">1000<", ">5000<", "0.0270"):
        assert cell in row, cell
    change = admin_client.get(reverse("admin:messages_app_assistant_change", args=[claude.pk]))
    assert "2 replies, 4000 prompt + 1000 completion = 5000 tokens" in change.content.decode()


def test_admin_assistants_are_for_staff_only(room: Room, alice: User) -> None:
    response = client_of(alice).get(reverse("admin:messages_app_assistant_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_adds_an_assistant_with_its_key_variable_not_its_key(
    admin_client: Client,
) -> None:
    url = reverse("admin:messages_app_assistant_add")
    data = {
        "handle": "llama",
        "name": "Llama",
        "active": "on",
        "model": "llama3.2",
        "base_url": "http://localhost:11434/v1",
        "api_key_env": "",
        "system_prompt": "",
        "temperature": "0.3",
        "max_tokens": "",
        "input_price_per_million": "",
        "output_price_per_million": "",
    }
    assert admin_client.post(url, data).status_code == 302
    llama = Assistant.objects.get(handle="llama")
    assert (llama.base_url, llama.model, llama.temperature) == (
        "http://localhost:11434/v1",
        "llama3.2",
        0.3,
    )
    bad = admin_client.post(url, {**data, "handle": "Bad-Handle", "api_key_env": "sk-123 456"})
    assert bad.status_code == 200  # the form again, with its errors
    assert Assistant.objects.filter(name="Llama").count() == 1


def test_admin_message_list_shows_and_filters_by_assistant(
    admin_client: Client, room: Room, alice: User
) -> None:
    claude = Assistant.objects.create(handle="claude", name="Claude")
    question = Message.objects.create(room=room, author=alice, body="@claude hi")
    Message.objects.create(room=room, role=Role.ASSISTANT, reply_to=question, assistant=claude)
    changelist = reverse("admin:messages_app_message_changelist")
    page = admin_client.get(changelist, {"assistant__id__exact": claude.pk}).content.decode()
    assert "@claude (Claude)" in page  # the column
    assert "1 message" in page or "1 result" in page


def test_admin_room_form_keeps_the_same_bounds_on_instructions_and_context(
    admin_client: Client, room: Room, settings: Any
) -> None:
    settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS = 10
    url = reverse("admin:messages_app_room_change", args=[room.pk])
    base = {"name": room.name, "slug": room.slug, "visibility": "public", "granularity": ""}
    refused = admin_client.post(
        url, {**base, "assistant_instructions": "x" * 11, "context_messages": "0"}
    )
    assert refused.status_code == 200
    page = refused.content.decode()
    assert "The instructions are 11 characters; the limit is 10." in page
    assert "From 1 to" in page
    assert settings_of(room) == ("", None, "")
    saved = admin_client.post(
        url, {**base, "assistant_instructions": "Be kind.", "context_messages": "4"}
    )
    assert saved.status_code == 302
    assert settings_of(room) == ("Be kind.", 4, "")
