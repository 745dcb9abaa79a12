"""The admin with Django's test client against real rows, and a watching socket.

Tasks the actions queue are recorded by the ``queued_tasks`` fixture
(tests/messages_app/conftest.py); the real queue and a real worker are exercised
by tests/deploy/test_compose_processes.py, where a retried reply streams again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chatsite.asgi import application
from messages_app import services
from messages_app.models import Message, Room, Status, User
from tests.conftest import session_cookie

CHANGELIST = "admin:messages_app_message_changelist"
BODY = "First line\n    indented <b>not bold</b> & more\n\n\ttabbed  end  "


def change_url(message: Message | int) -> str:
    pk = message if isinstance(message, int) else message.pk
    return reverse("admin:messages_app_message_change", args=[pk])


@dataclass
class Rows:
    room: Room
    other_room: Room
    note: Message  # alice's plain message, with whitespace and HTML in it
    question: Message  # bob's @gpt question
    answer: Message  # its reply: done, with usage
    failed: Message  # a reply that failed midway
    streaming: Message  # a reply streaming now
    elsewhere: Message  # a message in the other room


def ask(room: Room, author: User, body: str) -> tuple[Message, Message]:
    result = services.message_post(room=room, author=author, body=body)
    assert result.reply is not None
    return result.message, result.reply


def make_rows(room: Room, alice: User, bob: User) -> Rows:
    other = Room.objects.create(name="Other", slug="other")
    note = services.message_post(room=room, author=alice, body=BODY).message
    question, answer = ask(room, bob, "@gpt summarise, please")
    attempt = services.reply_claim(message_id=answer.pk, model="test-model")
    assert attempt is not None
    services.reply_append(message_id=answer.pk, attempt=attempt, text="A summary:\n  - one")
    services.reply_finish(
        message_id=answer.pk,
        attempt=attempt,
        model="test-model-2024",
        usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    )
    _, failed = ask(room, alice, "@gpt and now?")
    attempt = services.reply_claim(message_id=failed.pk, model="test-model")
    assert attempt is not None
    services.reply_append(message_id=failed.pk, attempt=attempt, text="Half an ans")
    services.reply_fail(message_id=failed.pk, attempt=attempt, error="Lost the connection.")
    _, streaming = ask(room, bob, "@gpt a long story")
    attempt = services.reply_claim(message_id=streaming.pk, model="test-model")
    assert attempt is not None
    services.reply_append(message_id=streaming.pk, attempt=attempt, text="Once upon")
    elsewhere = services.message_post(room=other, author=bob, body="over here").message
    return Rows(
        room=room,
        other_room=other,
        note=note,
        question=question,
        answer=Message.objects.get(pk=answer.pk),
        failed=Message.objects.get(pk=failed.pk),
        streaming=Message.objects.get(pk=streaming.pk),
        elsewhere=elsewhere,
    )


@pytest.fixture
def rows(room: Room, alice: User, bob: User) -> Rows:
    return make_rows(room, alice, bob)


def listed(client: Client, **params: Any) -> list[int]:
    """The ids the message changelist shows for these query parameters."""
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return sorted(m.pk for m in response.context["cl"].result_list)


def act(client: Client, action: str, *messages: Message) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [m.pk for m in messages]},
        follow=True,
    )


def notices(response: Any) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


# --- the changelist -----------------------------------------------------------------


@pytest.mark.django_db
def test_admin_changelist_shows_the_columns(admin_client: Client, rows: Rows) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    for header in ("Room", "Author", "Role", "Status", "Body", "Version", "Tokens", "Model"):
        assert f">{header}</" in html
    assert ">Created at</" in html and ">Finished at</" in html
    assert len(response.context["cl"].result_list) == Message.objects.count() == 8
    # a row: its room, author (assistant shown as @gpt), role, status, version, tokens
    assert "17 (12+5)" in html
    assert "@gpt" in html
    assert "First line indented &lt;b&gt;not bold&lt;/b&gt; &amp; more tabbed end" in html
    assert "<b>not bold</b>" not in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params,expected",
    [
        ({"role__exact": "assistant"}, ["answer", "failed", "streaming"]),
        ({"role__exact": "user"}, ["note", "question", "elsewhere", "q2", "q3"]),
        ({"status__exact": "failed"}, ["failed"]),
        ({"status__exact": "streaming"}, ["streaming"]),
        ({"status__exact": "cancelled"}, []),
    ],
)
def test_admin_changelist_filters_by_role_and_status(
    admin_client: Client, rows: Rows, params: dict[str, str], expected: list[str]
) -> None:
    named = {
        "note": rows.note,
        "question": rows.question,
        "answer": rows.answer,
        "failed": rows.failed,
        "streaming": rows.streaming,
        "elsewhere": rows.elsewhere,
        "q2": rows.failed.reply_to,
        "q3": rows.streaming.reply_to,
    }
    assert listed(admin_client, **params) == sorted(named[n].pk for n in expected)  # type: ignore[union-attr]


@pytest.mark.django_db
def test_admin_changelist_filters_by_room(admin_client: Client, rows: Rows) -> None:
    assert listed(admin_client, room__id__exact=rows.other_room.pk) == [rows.elsewhere.pk]
    in_general = listed(admin_client, room__id__exact=rows.room.pk)
    assert rows.elsewhere.pk not in in_general and len(in_general) == 7
    # the room filter offers both rooms
    response = admin_client.get(reverse(CHANGELIST))
    assert f"?room__id__exact={rows.other_room.pk}" in response.content.decode()


@pytest.mark.django_db
def test_admin_changelist_filters_by_date_and_has_a_date_hierarchy(
    admin_client: Client, rows: Rows
) -> None:
    long_ago = timezone.now() - timedelta(days=400)
    Message.objects.filter(pk=rows.note.pk).update(created_at=long_ago)
    response = admin_client.get(reverse(CHANGELIST))
    changelist = response.context["cl"]
    # the date filter, as its links offer it
    (date_filter,) = [f for f in changelist.filter_specs if f.title == "created at"]
    links = {c["display"]: c["query_string"] for c in date_filter.choices(changelist)}
    assert set(links) >= {"Any date", "Today", "Past 7 days", "This month", "This year"}
    recent = admin_client.get(reverse(CHANGELIST) + links["Past 7 days"]).context["cl"]
    recent_ids = [m.pk for m in recent.result_list]
    assert rows.note.pk not in recent_ids and len(recent_ids) == 7
    # the date hierarchy: a year with only the old row
    html = response.content.decode()
    assert '<nav class="toplinks">' in html
    assert f"?created_at__year={long_ago.year}" in html
    assert listed(
        admin_client, created_at__year=long_ago.year, created_at__month=long_ago.month
    ) == [rows.note.pk]


@pytest.mark.django_db
def test_admin_changelist_searches_body_and_author(admin_client: Client, rows: Rows) -> None:
    assert listed(admin_client, q="indented") == [rows.note.pk]
    assert listed(admin_client, q="upon") == [rows.streaming.pk]
    by_bob = [rows.question.pk, rows.streaming.reply_to.pk, rows.elsewhere.pk]  # type: ignore[union-attr]
    assert listed(admin_client, q="Bob") == sorted(by_bob)  # display name
    assert listed(admin_client, q="alice") == sorted([rows.note.pk, rows.failed.reply_to.pk])  # type: ignore[union-attr]
    assert listed(admin_client, q="no such words") == []


# --- the change page ----------------------------------------------------------------


@pytest.mark.django_db
def test_admin_change_page_shows_the_full_body_with_its_whitespace(
    admin_client: Client, rows: Rows
) -> None:
    response = admin_client.get(change_url(rows.note))
    assert response.status_code == 200
    html = response.content.decode()
    escaped = BODY.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'<pre class="message-body">{escaped}</pre>' in html
    # wrapped by the admin's stylesheet, not an inline style (a strict CSP allows it)
    assert '<link href="/static/messages_app/admin.css"' in html
    stylesheet = finders.find("messages_app/admin.css")
    assert stylesheet and "white-space: pre-wrap" in Path(stylesheet).read_text()
    assert "<b>not bold</b>" not in html


@pytest.mark.django_db
def test_admin_change_page_links_the_reply_and_the_question_both_ways(
    admin_client: Client, rows: Rows
) -> None:
    reply_page = admin_client.get(change_url(rows.answer)).content.decode()
    assert f'href="{change_url(rows.question)}"' in reply_page
    assert "A summary:\n  - one" in reply_page  # the reply's body, whitespace kept
    assert "test-model-2024" in reply_page
    question_page = admin_client.get(change_url(rows.question)).content.decode()
    assert f'href="{change_url(rows.answer)}"' in question_page
    assert f"#{rows.answer.pk} assistant (done): A summary: - one" in question_page


@pytest.mark.django_db
def test_admin_change_page_shows_the_error_of_a_failed_reply(
    admin_client: Client, rows: Rows
) -> None:
    html = admin_client.get(change_url(rows.failed)).content.decode()
    assert "Lost the connection." in html
    assert "Half an ans" in html


@pytest.mark.django_db
def test_admin_change_page_is_read_only(admin_client: Client, rows: Rows) -> None:
    response = admin_client.get(change_url(rows.streaming))
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert "<textarea" not in html and 'name="body"' not in html
    before = Message.objects.values().get(pk=rows.streaming.pk)
    posted = admin_client.post(
        change_url(rows.streaming), {"body": "edited", "status": "done", "version": 99}
    )
    assert posted.status_code == 403
    assert Message.objects.values().get(pk=rows.streaming.pk) == before


@pytest.mark.django_db
def test_admin_cannot_add_or_delete_messages_or_delete_users(
    admin_client: Client, rows: Rows
) -> None:
    add = reverse("admin:messages_app_message_add")
    assert admin_client.get(add).status_code == 403
    assert admin_client.post(add, {"room": rows.room.pk, "body": "x"}).status_code == 403
    delete = reverse("admin:messages_app_message_delete", args=[rows.note.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    # (rooms are deleted, with a cascade, through services.room_delete: test_room_admin.py)
    user_delete = reverse("admin:messages_app_user_delete", args=[rows.note.author_id])
    assert admin_client.post(user_delete, {"post": "yes"}).status_code == 403
    # and the bulk delete action is not offered
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [rows.note.pk]}
    )
    assert response.status_code in (200, 302)
    assert Message.objects.count() == 8
    assert Room.objects.count() == 2


@pytest.mark.django_db
def test_admin_user_and_room_pages_show_display_name_and_room_messages(
    admin_client: Client, rows: Rows
) -> None:
    users = admin_client.get(reverse("admin:messages_app_user_changelist"), {"q": "Ali"})
    assert users.status_code == 200
    assert [u.username for u in users.context["cl"].result_list] == ["alice"]
    alice_page = admin_client.get(
        reverse("admin:messages_app_user_change", args=[rows.note.author_id])
    )
    assert 'name="display_name" value="Alice"' in alice_page.content.decode()
    room_list = admin_client.get(reverse("admin:messages_app_room_changelist")).content.decode()
    assert f"?room__id__exact={rows.room.pk}" in room_list and "7 messages" in room_list


@pytest.mark.django_db
def test_admin_room_add_sets_the_creator(admin_client: Client, admin_user: User) -> None:
    response = admin_client.post(
        reverse("admin:messages_app_room_add"),
        {
            "name": "Ops",
            "slug": "ops",
            "granularity": "sentence",
            "visibility": "private",
        },
    )
    assert response.status_code == 302
    room = Room.objects.get(slug="ops")
    assert (room.name, room.granularity, room.created_by) == ("Ops", "sentence", admin_user)
    assert room.visibility == "private"
    assert list(room.memberships.values_list("user__username", "role")) == [("admin", "owner")]


# --- the actions ------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_cancel_action_reports_each_row(admin_client: Client, rows: Rows) -> None:
    response = act(admin_client, "cancel_streaming_replies", rows.streaming, rows.answer, rows.note)
    assert response.status_code == 200
    assert sorted(notices(response)) == sorted(
        [
            ("success", f"Cancelled 1: #{rows.streaming.pk}."),
            ("error", f"#{rows.answer.pk}: Reply {rows.answer.pk} is already done."),
            ("error", f"#{rows.note.pk}: There is no reply {rows.note.pk} in this room."),
        ]
    )
    streaming = Message.objects.get(pk=rows.streaming.pk)
    assert (streaming.status, streaming.body) == (Status.CANCELLED, "Once upon")
    # the row's history names who cancelled it
    (entry,) = LogEntry.objects.filter(object_id=str(rows.streaming.pk))
    assert (entry.user.username, entry.get_change_message()) == (
        "admin",
        "Cancelled by the admin action.",
    )
    assert not LogEntry.objects.filter(object_id=str(rows.answer.pk)).exists()
    assert streaming.version == rows.streaming.version + 1
    assert streaming.finished_at is not None
    # the rows it refused are untouched
    assert Message.objects.get(pk=rows.answer.pk).version == rows.answer.version
    assert Message.objects.get(pk=rows.note.pk).version == rows.note.version


@pytest.mark.django_db
def test_admin_retry_action_reports_each_row(admin_client: Client, rows: Rows) -> None:
    response = act(admin_client, "retry_failed_replies", rows.failed, rows.streaming, rows.note)
    assert sorted(notices(response)) == sorted(
        [
            ("success", f"Queued again 1: #{rows.failed.pk}."),
            ("error", f"#{rows.streaming.pk}: Reply {rows.streaming.pk} is streaming."),
            (
                "error",
                f"#{rows.note.pk}: Message {rows.note.pk} is not a reply: only the "
                "assistant's replies can be regenerated.",
            ),
        ]
    )
    failed = Message.objects.get(pk=rows.failed.pk)
    assert (failed.status, failed.body, failed.error) == (Status.PENDING, "", "")
    assert failed.version == rows.failed.version + 1
    assert Message.objects.get(pk=rows.streaming.pk).status == Status.STREAMING


@pytest.mark.django_db
def test_admin_actions_are_offered_only_with_change_permission(
    client: Client, rows: Rows, make_user: Any
) -> None:
    viewer = make_user("viewer")
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(viewer)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "cancel_streaming_replies" not in response.content.decode()
    act(client, "cancel_streaming_replies", rows.streaming)
    assert Message.objects.get(pk=rows.streaming.pk).status == Status.STREAMING


# --- who gets in --------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_refuses_a_non_staff_user(client: Client, rows: Rows, alice: User) -> None:
    client.force_login(alice)
    for url in (reverse("admin:index"), reverse(CHANGELIST), change_url(rows.note)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    act(client, "cancel_streaming_replies", rows.streaming)
    assert Message.objects.get(pk=rows.streaming.pk).status == Status.STREAMING


@pytest.mark.django_db
def test_admin_login_refuses_a_non_staff_account(client: Client, alice: User) -> None:
    response = client.post(
        reverse("admin:login"), {"username": "alice", "password": "a-Strong-pass-9"}
    )
    assert response.status_code == 200
    assert "staff account" in response.content.decode()
    assert client.get(reverse("admin:index")).status_code == 302


@pytest.mark.django_db
def test_admin_refuses_anonymous_and_staff_without_permissions(
    client: Client, rows: Rows, make_user: Any
) -> None:
    assert client.get(reverse(CHANGELIST)).status_code == 302
    staff = make_user("staff-no-perms")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(change_url(rows.note)).status_code == 403


# --- the actions seen by a watching socket ------------------------------------------

ORIGIN = (b"origin", b"http://localhost")


async def watch(room: Room, user: User) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/rooms/{room.slug}/",
        headers=[ORIGIN, (b"host", b"localhost"), (b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    # then the room's presence list, with this socket in it (it comes on its own)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "presence"
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_admin_cancel_action_updates_a_watching_socket(
    admin_client: Client, room: Room, alice: User, bob: User
) -> None:
    rows = await sync_to_async(make_rows)(room, alice, bob)
    socket = await watch(room, alice)
    response = await sync_to_async(act)(admin_client, "cancel_streaming_replies", rows.streaming)
    assert ("success", f"Cancelled 1: #{rows.streaming.pk}.") in notices(response)
    frame = await socket.receive_json_from(timeout=5)
    assert frame["type"] == "message"
    sent = frame["message"]
    row = await sync_to_async(Message.objects.get)(pk=rows.streaming.pk)
    assert (sent["id"], sent["status"], sent["body"], sent["version"]) == (
        row.pk,
        "cancelled",
        "Once upon",
        row.version,
    )
    assert row.status == Status.CANCELLED
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_admin_retry_action_requeues_and_updates_a_watching_socket(
    admin_client: Client, room: Room, alice: User, bob: User, queued_tasks: list[Any]
) -> None:
    rows = await sync_to_async(make_rows)(room, alice, bob)
    queued_tasks.clear()
    socket = await watch(room, bob)
    response = await sync_to_async(act)(admin_client, "retry_failed_replies", rows.failed)
    assert ("success", f"Queued again 1: #{rows.failed.pk}.") in notices(response)
    frame = await socket.receive_json_from(timeout=5)
    sent = frame["message"]
    assert (sent["id"], sent["status"], sent["body"], sent["error"]) == (
        rows.failed.pk,
        "pending",
        "",
        "",
    )
    row = await sync_to_async(Message.objects.get)(pk=rows.failed.pk)
    assert (row.status, row.version) == (Status.PENDING, sent["version"])
    assert queued_tasks == [("worker.tasks.stream_reply", [rows.failed.pk])]
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_admin_action_on_wrong_rows_sends_nothing(
    admin_client: Client, room: Room, alice: User, bob: User, queued_tasks: list[Any]
) -> None:
    rows = await sync_to_async(make_rows)(room, alice, bob)
    queued_tasks.clear()
    socket = await watch(room, alice)
    await sync_to_async(act)(admin_client, "cancel_streaming_replies", rows.answer, rows.note)
    await sync_to_async(act)(admin_client, "retry_failed_replies", rows.note, rows.streaming)
    assert await socket.receive_nothing(timeout=0.5)
    assert queued_tasks == []
    await socket.disconnect()
