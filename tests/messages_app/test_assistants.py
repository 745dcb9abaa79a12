"""Assistants (issue 13): the model, who a post calls, the limits, the payload."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from messages_app import selectors, services
from messages_app.models import Assistant, MemberRole, Membership, Message, Role, Room, User
from messages_app.protocol import ClientError

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_gpt")]


def make_assistant(handle: str, **fields: Any) -> Assistant:
    fields.setdefault("name", handle.title())
    return Assistant.objects.create(handle=handle, **fields)


def replies_of(message: Message) -> list[tuple[str, str]]:
    return [
        (r.assistant.handle, r.status)
        for r in Message.objects.filter(reply_to=message).select_related("assistant").order_by("id")
    ]


# --- the model ------------------------------------------------------------------------


@pytest.mark.parametrize("handle", ["claude", "gpt4o", "my_bot", "a"])
def test_assistant_handle_accepts_lower_case_words(handle: str) -> None:
    Assistant(handle=handle, name="X").full_clean()


@pytest.mark.parametrize(
    ("handle", "code"),
    [
        ("Claude", "invalid_handle"),  # lower-case only: a mention matches any case
        ("4o", "invalid_handle"),
        ("gpt-bot", "invalid_handle"),  # "@gpt-bot" is not a mention
        ("gpt.bot", "invalid_handle"),
        ("x" * 33, "invalid_handle"),
        ("all", "reserved_handle"),
        ("everyone", "reserved_handle"),
        ("here", "reserved_handle"),
    ],
)
def test_assistant_handle_refuses_what_no_mention_can_spell_and_reserved_words(
    handle: str, code: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        Assistant(handle=handle, name="X").full_clean()
    codes = [e.code for e in raised.value.error_dict["handle"]]
    assert code in codes


def test_assistant_key_variable_is_a_name_not_a_key() -> None:
    with pytest.raises(ValidationError) as raised:
        Assistant(handle="x", name="X", api_key_env="sk-abc 123").full_clean()
    assert "api_key_env" in raised.value.error_dict
    Assistant(handle="x", name="X", api_key_env="ANTHROPIC_KEY").full_clean()


def test_default_gpt_has_every_field_blank_so_it_follows_the_settings() -> None:
    gpt = Assistant.objects.get(handle="gpt")
    assert (gpt.name, gpt.model, gpt.base_url, gpt.api_key_env, gpt.active) == (
        "GPT",
        "",
        "",
        "",
        True,
    )


# --- who a post calls -----------------------------------------------------------------


def test_post_mentioning_two_handles_makes_one_pending_reply_for_each(
    room: Room, alice: User, queued_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    make_assistant("claude", name="Claude")
    with django_capture_on_commit_callbacks(execute=True):
        result = services.message_post(room=room, author=alice, body="@claude and @gpt: compare?")
    assert replies_of(result.message) == [("claude", "pending"), ("gpt", "pending")]
    assert [r.pk for r in result.replies] == [
        m.pk for m in Message.objects.filter(reply_to=result.message).order_by("id")
    ]
    assert result.reply == result.replies[0]
    # One streaming task each, queued on commit.
    assert sorted(args[0] for _name, args in queued_tasks) == sorted(r.pk for r in result.replies)


def test_post_mentioning_unknown_or_inactive_handles_gets_no_reply_and_no_error(
    room: Room, alice: User, queued_tasks: list[Any]
) -> None:
    make_assistant("sleepy", active=False)
    result = services.message_post(room=room, author=alice, body="@sleepy @nobody hello")
    assert result.replies == () and result.reply is None
    assert Message.objects.filter(room=room).count() == 1
    assert queued_tasks == []


def test_post_calls_at_most_the_first_assistants_mentioned(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_ASSISTANTS_PER_MESSAGE = 2
    for handle in ("one", "two", "three"):
        make_assistant(handle)
    result = services.message_post(room=room, author=alice, body="@three @nobody @one @two")
    assert replies_of(result.message) == [("three", "pending"), ("one", "pending")]


def test_post_with_a_mention_only_in_code_calls_nobody(room: Room, alice: User) -> None:
    body = "Type `@gpt` to ask it:\n\n```\n@gpt hello\n```"
    result = services.message_post(room=room, author=alice, body=body)
    assert result.replies == ()


def test_a_reply_mentioning_an_assistant_never_calls_it(room: Room, alice: User) -> None:
    make_assistant("claude")
    reply = services.message_post(room=room, author=alice, body="@gpt ask claude").reply
    assert reply is not None
    attempt = services.reply_claim(message_id=reply.pk, model="demo")
    services.reply_append(
        message_id=reply.pk, attempt=attempt, text="Sure: @claude, what do you think? @gpt?"
    )
    services.reply_finish(message_id=reply.pk, attempt=attempt, model="demo", usage=None)
    assert Message.objects.filter(room=room, role=Role.ASSISTANT).count() == 1


def test_post_resent_with_its_client_id_returns_every_reply_and_stores_nothing(
    room: Room, alice: User
) -> None:
    make_assistant("claude")
    first = services.message_post(
        room=room,
        author=alice,
        body="@gpt @claude",
        client_id="3f0e9a52-8b1c-4c5e-9d6a-1b2c3d4e5f60",
    )
    again = services.message_post(
        room=room,
        author=alice,
        body="@gpt @claude",
        client_id="3f0e9a52-8b1c-4c5e-9d6a-1b2c3d4e5f60",
    )
    assert not again.created
    assert [r.pk for r in again.replies] == [r.pk for r in first.replies]
    assert Message.objects.filter(room=room).count() == 3


def test_post_of_gpt_makes_the_default_assistant_when_its_row_is_missing(
    room: Room, alice: User
) -> None:
    Assistant.objects.filter(handle="gpt").delete()
    assert selectors.active_assistants() == [{"handle": "gpt", "name": "GPT"}]
    reply = services.message_post(room=room, author=alice, body="@gpt hi").reply
    assert reply is not None and reply.assistant.handle == "gpt"
    assert Assistant.objects.get(handle="gpt").name == "GPT"


def test_a_deactivated_gpt_is_not_called_offered_or_made_again(room: Room, alice: User) -> None:
    Assistant.objects.filter(handle="gpt").update(active=False)
    assert services.message_post(room=room, author=alice, body="@gpt hi").replies == ()
    assert selectors.active_assistants() == []
    assert Assistant.objects.filter(handle="gpt").count() == 1


# --- the per-user limits count each reply ---------------------------------------------


def test_open_replies_limit_counts_each_assistant_called(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 3
    make_assistant("claude")
    services.message_post(room=room, author=alice, body="@gpt @claude one")
    before = Message.objects.count()
    with pytest.raises(ClientError) as raised:
        services.message_post(room=room, author=alice, body="@gpt @claude two")
    assert raised.value.code == "rate_limited"
    assert "asks for 2" in raised.value.detail
    assert Message.objects.count() == before  # nothing stored
    # One more still fits.
    assert len(services.message_post(room=room, author=alice, body="@gpt three").replies) == 1


def test_a_message_calling_more_assistants_than_the_limits_allow_is_refused(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 2
    for handle in ("one", "two"):
        make_assistant(handle)
    with pytest.raises(ClientError) as raised:
        services.message_post(room=room, author=alice, body="@gpt @one @two")
    assert raised.value.code == "rate_limited"
    assert "calls 3 assistants" in raised.value.detail
    assert Message.objects.count() == 0


def test_replies_per_minute_limit_counts_each_assistant_called(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_REPLIES_PER_MINUTE = 3
    settings.GPT_MAX_OPEN_REPLIES_PER_USER = 10
    make_assistant("claude")
    services.message_post(room=room, author=alice, body="@gpt @claude")
    with pytest.raises(ClientError) as raised:
        services.message_post(room=room, author=alice, body="@gpt @claude")
    assert raised.value.code == "rate_limited" and raised.value.retry_after
    assert Message.objects.count() == 3


# --- the payload ----------------------------------------------------------------------


def test_payload_names_the_assistant_of_a_reply_and_none_for_a_user(
    room: Room, alice: User
) -> None:
    make_assistant("claude", name="Claude 3")
    result = services.message_post(room=room, author=alice, body="@claude hi")
    snapshot = {m["id"]: m for m in selectors.room_snapshot(room=room)}
    assert snapshot[result.message.pk]["assistant"] is None
    assert snapshot[result.replies[0].pk]["assistant"] == {"handle": "claude", "name": "Claude 3"}


def test_mention_candidates_are_active_assistants_then_members(
    room: Room, alice: User, bob: User
) -> None:
    Membership.objects.create(room=room, user=bob, role=MemberRole.MEMBER)
    make_assistant("claude", name="Claude")
    make_assistant("sleepy", active=False)
    assert selectors.mention_candidates(room=room) == [
        {"kind": "assistant", "handle": "claude", "name": "Claude"},
        {"kind": "assistant", "handle": "gpt", "name": "GPT"},
        {"kind": "member", "handle": "alice", "name": "Alice"},
        {"kind": "member", "handle": "bob", "name": "Bob"},
    ]


def test_assistant_with_replies_cannot_be_deleted(room: Room, alice: User) -> None:
    from django.db.models import ProtectedError

    services.message_post(room=room, author=alice, body="@gpt hi")
    with pytest.raises(ProtectedError):
        Assistant.objects.get(handle="gpt").delete()


def test_estimated_cost_uses_the_prices_per_million() -> None:
    from messages_app.admin import estimated_cost

    assert estimated_cost(
        prompt_tokens=2_000_000,
        completion_tokens=500_000,
        input_price=Decimal("0.15"),
        output_price=Decimal("0.60"),
    ) == Decimal("0.6000")
    assert (
        estimated_cost(prompt_tokens=10, completion_tokens=10, input_price=None, output_price=None)
        is None
    )


def test_export_names_each_replys_assistant(room: Room, alice: User) -> None:
    from messages_app.export import export_row

    make_assistant("claude", name="Claude")
    result = services.message_post(room=room, author=alice, body="@gpt @claude hi")
    rows = [export_row(m) for m in Message.objects.filter(room=room).order_by("id")]
    assert [(r["author"], r["assistant"]) for r in rows] == [
        ("Alice", None),
        ("GPT", "GPT"),
        ("Claude", "Claude"),
    ]
    assert len(result.replies) == 2
