"""A room's export (issue 14, point 6): Markdown and JSON, streamed a page at a time."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext

from messages_app import events, export, services
from messages_app.models import Message, Role, Room, Status, User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "send_to_room", lambda room_id, event: None)
    monkeypatch.setattr(events, "send_to_rooms", lambda published: None)
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)


def talk(room: Room, alice: User, bob: User) -> dict[str, Message]:
    """A short conversation: two posts, a finished reply, a failed one, a streaming one."""
    question = Message.objects.create(room=room, author=alice, body="Plans for *Friday*?")
    Message.objects.create(room=room, author=bob, body="Tea at 3 ☕\n\n- cake\n- scones")
    done = Message.objects.create(
        room=room,
        role=Role.ASSISTANT,
        status=Status.DONE,
        body="Sounds **good**.",
        reply_to=question,
        model="gpt-4o-mini",
        prompt_tokens=12,
        completion_tokens=4,
        total_tokens=16,
    )
    failed = Message.objects.create(
        room=room,
        role=Role.ASSISTANT,
        status=Status.FAILED,
        body="Half",
        reply_to=question,
        error="The model stopped.",
    )
    streaming = services.message_post(room=room, author=alice, body="@gpt more").reply
    assert streaming is not None
    attempt = services.reply_claim(message_id=streaming.pk, model="m")
    assert attempt is not None
    services.reply_append(message_id=streaming.pk, attempt=attempt, text="So far")
    return {"question": question, "done": done, "failed": failed, "streaming": streaming}


async def download(client: AsyncClient, slug: str, fmt: str) -> tuple[Any, str]:
    response = await client.get(f"/rooms/{slug}/export.{fmt}")
    assert response.streaming
    body = b"".join([part async for part in response.streaming_content]).decode()
    return response, body


async def test_export_json_holds_every_message_with_authors_times_and_models(
    room: Room, alice: User, bob: User
) -> None:
    rows = await sync_to_async(talk)(room, alice, bob)
    client = AsyncClient()
    await client.aforce_login(alice)
    response, body = await download(client, room.slug, "json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"].startswith(f'attachment; filename="{room.slug}-')
    data = json.loads(body)
    assert data["room"] == {"name": room.name, "slug": room.slug, "granularity": room.granularity}
    messages = data["messages"]
    assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
    assert len(messages) == 6  # two posts, the done and failed replies, "@gpt more", its reply
    by_id = {m["id"]: m for m in messages}
    done = by_id[rows["done"].pk]
    assert (done["author"], done["assistant"], done["model"], done["reply_to"]) == (
        "GPT",
        "GPT",
        "gpt-4o-mini",
        rows["question"].pk,
    )
    assert done["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    assert by_id[rows["question"].pk]["author"] == "Alice"
    assert by_id[rows["question"].pk]["username"] == "alice"
    assert by_id[rows["failed"].pk]["error"] == "The model stopped."
    # a streaming reply is exported with its text so far (its chunks too)
    assert by_id[rows["streaming"].pk]["body"] == "So far"
    assert by_id[rows["streaming"].pk]["status"] == "streaming"


async def test_export_markdown_reads_as_the_conversation(
    room: Room, alice: User, bob: User
) -> None:
    rows = await sync_to_async(talk)(room, alice, bob)
    await sync_to_async(services.membership_join)(room=room, user=bob)  # members export
    client = AsyncClient()
    await client.aforce_login(bob)
    response, body = await download(client, room.slug, "md")
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert body.startswith(f"# {room.name}\n\n")
    assert "**Alice** · " in body and "Plans for *Friday*?" in body
    assert "Tea at 3 ☕\n\n- cake\n- scones\n\n---" in body
    assert "**GPT** · `gpt-4o-mini` · " in body and f"reply to #{rows['question'].pk}" in body
    assert "> Failed: The model stopped." in body
    assert body.index("Plans for") < body.index("Tea at 3") < body.index("Sounds **good**.")


@override_settings(CHAT_EXPORT_PAGE_SIZE=7)
async def test_export_reads_a_large_room_a_page_at_a_time(room: Room, alice: User) -> None:
    await sync_to_async(Message.objects.bulk_create)(
        [Message(room=room, author=alice, body=f"message {n}") for n in range(50)]
    )
    seen: list[int] = []

    def count_pages() -> list[dict[str, Any]]:
        with CaptureQueriesContext(connection) as queries:
            rows = [r for r in export._page(room, 0, 10_000)]  # noqa: SLF001
        assert len(queries) == 2  # the messages, their earlier attempts: not one a row
        return rows

    assert len(await sync_to_async(count_pages)()) == 50
    async for row in export.rows(room):
        seen.append(int(row["body"].split()[1]))
    assert seen == list(range(50))
    pages = []
    original = export._page  # noqa: SLF001

    def spy(room: Room, after: int, size: int) -> list[dict[str, Any]]:
        page = original(room, after, size)
        pages.append(len(page))
        return page

    export._page = spy  # type: ignore[assignment]  # noqa: SLF001
    try:
        async for _ in export.rows(room):
            pass
    finally:
        export._page = original  # type: ignore[assignment]  # noqa: SLF001
    assert pages == [7] * 7 + [1]  # 50 messages, never more than a page in memory


async def test_export_of_an_empty_room_is_valid(room: Room, alice: User) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    _, body = await download(client, room.slug, "json")
    assert json.loads(body)["messages"] == []
    _, markdown = await download(client, room.slug, "md")
    assert markdown.startswith(f"# {room.name}")


@pytest.mark.parametrize("fmt", ["md", "json"])
def test_export_of_a_private_room_is_not_found_for_a_non_member(
    room: Room, alice: User, bob: User, fmt: str
) -> None:
    Room.objects.filter(pk=room.pk).update(visibility="private")
    Message.objects.create(room=room, author=alice, body="members only")
    client = Client()
    client.force_login(bob)
    response = client.get(f"/rooms/{room.slug}/export.{fmt}")
    assert response.status_code == 404
    assert b"members only" not in response.content


def test_export_needs_a_signed_in_user(room: Room) -> None:
    response = Client().get(f"/rooms/{room.slug}/export.json")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/rooms/no-such-room/export.json", 404),
        ("/rooms/general/export.csv", 404),
        ("/rooms/general/export.", 404),
        ("/rooms/general/export.json/", 404),
    ],
)
def test_export_refuses_unknown_rooms_and_formats(
    room: Room, alice: User, path: str, status: int
) -> None:
    client = Client()
    client.force_login(alice)
    assert client.get(path).status_code == status


def test_export_refuses_other_methods(room: Room, alice: User) -> None:
    client = Client()
    client.force_login(alice)
    assert client.post(f"/rooms/{room.slug}/export.json").status_code == 405


def test_room_page_links_both_exports(room: Room, alice: User) -> None:
    client = Client()
    client.force_login(alice)
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert f'href="/rooms/{room.slug}/export.md" download' in page
    assert f'href="/rooms/{room.slug}/export.json" download' in page


def test_export_row_of_a_deleted_author_names_nobody(room: Room) -> None:
    gone = User.objects.create_user(username=f"gone-{uuid.uuid4().hex[:6]}", password="x-Pass-91")
    message = Message.objects.create(room=room, author=gone, body="hi")
    gone.delete()
    message.refresh_from_db()
    row = export.export_row(message)
    assert (row["author"], row["username"]) == (None, None)
    assert "**(deleted user)** · " in "".join(export.markdown_lines(row))


async def test_export_says_when_a_message_was_edited(room: Room, alice: User) -> None:
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="helo")
    await sync_to_async(services.message_post)(room=room, author=alice, body="as written")
    await sync_to_async(services.message_edit)(
        room=room, message_id=posted.message.pk, actor=alice, body="hello"
    )
    client = AsyncClient()
    await client.aforce_login(alice)
    _, body = await download(client, room.slug, "json")
    exported = json.loads(body)["messages"]
    assert [(m["body"], m["edited_at"] is not None) for m in exported] == [
        ("hello", True),
        ("as written", False),
    ]
    _, markdown = await download(client, room.slug, "md")
    heads = [line for line in markdown.splitlines() if line.startswith("**Alice**")]
    assert [head.endswith("· edited") for head in heads] == [True, False]


async def test_export_keeps_a_regenerated_replys_earlier_attempts(room: Room, alice: User) -> None:
    def regenerated() -> Message:
        reply = services.message_post(room=room, author=alice, body="@gpt a poem").reply
        assert reply is not None
        attempt = services.reply_claim(message_id=reply.pk, model="first-model")
        assert attempt is not None
        services.reply_append(message_id=reply.pk, attempt=attempt, text="Roses\nare red")
        services.reply_finish(message_id=reply.pk, attempt=attempt, model="first-model")
        services.reply_regenerate(message_id=reply.pk, actor=alice)
        attempt = services.reply_claim(message_id=reply.pk, model="second-model")
        assert attempt is not None
        services.reply_append(message_id=reply.pk, attempt=attempt, text="Violets")
        services.reply_finish(message_id=reply.pk, attempt=attempt, model="second-model")
        return reply

    reply = await sync_to_async(regenerated)()
    client = AsyncClient()
    await client.aforce_login(alice)
    _, body = await download(client, room.slug, "json")
    row = {m["id"]: m for m in json.loads(body)["messages"]}[reply.pk]
    assert (row["body"], row["model"]) == ("Violets", "second-model")
    assert [(r["number"], r["body"], r["model"], r["status"]) for r in row["revisions"]] == [
        (1, "Roses\nare red", "first-model", "done")
    ]
    _, markdown = await download(client, room.slug, "md")
    assert "Violets\n\n> *Earlier attempt 1 of 2 · `first-model`*\n>\n> Roses\n> are red\n" in (
        markdown
    )
