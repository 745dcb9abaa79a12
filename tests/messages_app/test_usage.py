"""Usage people can see (issue 13, point 4): the payload's figures, the usage page, the
admin's per-user columns, all counted as the daily budget counts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from messages_app import limits, services
from messages_app.models import Message, ReplyRevision, Room, User
from messages_app.protocol import ClientError
from messages_app.selectors import (
    Usage,
    message_get,
    message_payload,
    usage_periods,
    usage_since,
    users_with_usage,
)
from tests.messages_app.test_regenerate import answered, finish_again

pytestmark = pytest.mark.django_db


def tokens(total: int) -> dict[str, int]:
    return {"prompt_tokens": total - 1, "completion_tokens": 1, "total_tokens": total}


def usage_page(client: Client) -> str:
    response = client.get(reverse("usage"))
    assert response.status_code == 200
    return response.content.decode()


def row_total(html: str, key: str) -> int:
    found = re.search(rf'<tr data-usage="{key}">.*?<td data-usage="total">(\d+)</td>', html, re.S)
    assert found, key
    return int(found.group(1))


def test_payload_carries_revisions_and_when_the_attempt_was_asked_for(
    room: Room, alice: User
) -> None:
    reply = answered(room, alice)
    payload = message_payload(reply)
    assert (payload["revisions"], payload["requested_at"]) == (0, reply.created_at.isoformat())
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    payload = message_payload(message_get(message_id=reply.pk))
    row = Message.objects.get(pk=reply.pk)
    assert row.requested_at is not None
    assert (payload["revisions"], payload["requested_at"]) == (1, row.requested_at.isoformat())


def test_usage_since_counts_every_attempt_of_the_askers_replies(
    room: Room, alice: User, bob: User
) -> None:
    reply = answered(room, alice, usage=tokens(20))
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    finish_again(reply, "again", tokens(7))
    answered(room, bob, usage=tokens(100))  # bob's, not alice's
    services.message_post(room=room, author=alice, body="@gpt open")  # no figure yet
    assert usage_since(user_id=alice.pk) == Usage(
        replies=3, prompt_tokens=19 + 6, completion_tokens=2, total_tokens=27
    )
    assert usage_since(user_id=alice.pk, since=timezone.now() + timedelta(seconds=1)) == Usage(
        0, 0, 0, 0
    )


def test_usage_periods_start_at_midnight_and_the_first_in_time_zone(settings: Any) -> None:
    now = datetime(2026, 3, 17, 15, 30, tzinfo=UTC)
    periods = usage_periods(now)
    assert periods["today"] == datetime(2026, 3, 17, tzinfo=UTC)
    assert periods["month"] == datetime(2026, 3, 1, tzinfo=UTC)


def test_usage_page_shows_today_month_and_budget_as_the_limit_counts(
    client: Client, room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 50
    reply = answered(room, alice, usage=tokens(20))
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    finish_again(reply, "again", tokens(10))
    old = answered(room, alice, usage=tokens(400))
    month_start = usage_periods()["month"]
    long_ago = month_start - timedelta(days=3)
    Message.objects.filter(pk=old.pk).update(created_at=long_ago)
    client.force_login(alice)
    html = usage_page(client)
    assert row_total(html, "today") == 30
    assert row_total(html, "last-day") == 30
    assert row_total(html, "all") == 430
    assert 'Last 24 hours: <span data-usage="last-day-tokens">30</span> of 50 tokens' in html
    assert "20 left" in html
    assert "UTC" in html
    # The page and the budget agree: 20 more tokens and both say it is used up.
    answered(room, alice, usage=tokens(20))
    html = usage_page(client)
    assert row_total(html, "last-day") == 50 and "0 left" in html
    assert "You have used your budget" in html
    with pytest.raises(ClientError) as caught:
        limits.gpt_budget_check(user=alice)
    assert "(50 used)" in caught.value.detail


def test_usage_page_without_a_budget_says_so(client: Client, alice: User, settings: Any) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 0
    client.force_login(alice)
    html = usage_page(client)
    assert "No daily token budget is set" in html
    assert row_total(html, "today") == 0


def test_usage_page_needs_a_login_and_is_linked_from_the_header(
    client: Client, room: Room, alice: User
) -> None:
    response = client.get(reverse("usage"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(alice)
    page = client.get(reverse("room", args=[room.slug])).content.decode()
    assert f'href="{reverse("usage")}"' in page
    assert client.post(reverse("usage")).status_code == 405


def test_users_with_usage_annotates_today_month_and_all_time(
    room: Room, alice: User, bob: User
) -> None:
    reply = answered(room, alice, usage=tokens(20))
    services.reply_regenerate(message_id=reply.pk, actor=alice)
    finish_again(reply, "again", tokens(10))
    old = answered(room, alice, usage=tokens(400))
    Message.objects.filter(pk=old.pk).update(
        created_at=usage_periods()["month"] - timedelta(days=3)
    )
    got = {
        u.username: (u.tokens_today, u.tokens_month, u.tokens_total)
        for u in users_with_usage(User.objects.all())
    }
    assert got == {"alice": (30, 30, 430), "bob": (0, 0, 0)}
    assert ReplyRevision.objects.count() == 1


def test_admin_user_list_shows_tokens_per_user(
    admin_client: Client, room: Room, alice: User
) -> None:
    answered(room, alice, usage=tokens(42))
    html = admin_client.get(reverse("admin:messages_app_user_changelist")).content.decode()
    assert "@gpt tokens today" in html and "Tokens all time" in html
    (row,) = [tr for tr in re.findall(r"<tr>.*?</tr>", html, re.S) if ">alice</a>" in tr]
    assert re.findall(r'class="field-tokens_(?:today|month|total)">(\d+)<', row) == [
        "42",
        "42",
        "42",
    ]
    # Sorting by a usage column works (it is an annotation).
    ordered = admin_client.get(reverse("admin:messages_app_user_changelist") + "?o=-8")
    assert ordered.status_code == 200


def test_room_page_renders_the_usage_line_of_a_finished_reply(
    client: Client, room: Room, alice: User
) -> None:
    answered(room, alice, usage=tokens(17))
    services.message_post(room=room, author=alice, body="@gpt still open")
    client.force_login(alice)
    html = client.get(reverse("room", args=[room.slug])).content.decode()
    # The finished reply's line (the page's script keeps it live); none for the open one.
    assert html.count('class="msg__usage"') == 1
    assert "GPT · model-a · 16 + 1 = 17 tokens" in html
