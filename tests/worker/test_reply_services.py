"""The reply services the worker calls, for values that come from the model and for
writes sent again after their outcome was lost."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from messages_app import services
from messages_app.models import Message, Room, Status, User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)
    monkeypatch.setattr(services.events, "send_to_room", lambda room_id, event: None)


def pending(room: Room, user: User) -> Message:
    reply = services.message_post(room=room, author=user, body="@gpt go").reply
    assert reply is not None
    return reply


def test_reply_claim_sent_again_by_its_attempt_returns_its_own_claim(
    room: Room, alice: User
) -> None:
    reply = pending(room, alice)
    attempt = uuid.uuid4()
    assert services.reply_claim(message_id=reply.pk, model="m", attempt=attempt) == attempt
    version = Message.objects.get(pk=reply.pk).version
    assert services.reply_claim(message_id=reply.pk, model="m", attempt=attempt) == attempt
    assert Message.objects.get(pk=reply.pk).version == version  # claimed once
    assert services.reply_claim(message_id=reply.pk, model="m", attempt=uuid.uuid4()) is None


@pytest.mark.parametrize(
    "usage,stored",
    [
        ({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}, (5, 3, 8)),
        (
            {"prompt_tokens": -1, "completion_tokens": 10**20, "total_tokens": 2.0},
            (None, 2**31 - 1, 2),
        ),
        (
            {"prompt_tokens": "7", "completion_tokens": True, "total_tokens": 1.5},
            (None, None, None),
        ),
        ({"prompt_tokens": None}, (None, None, None)),
        ("not a dict", (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_reply_finish_stores_usage_clamped_or_left_out(
    room: Room, alice: User, usage: Any, stored: tuple[Any, ...]
) -> None:
    reply = pending(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    assert services.reply_finish(message_id=reply.pk, attempt=attempt, usage=usage) is not None
    row = Message.objects.get(pk=reply.pk)
    assert row.status == Status.DONE
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == stored


@pytest.mark.parametrize(
    "model,stored",
    [
        ("gpt-4o-2024", "gpt-4o-2024"),
        ("a" * 500, "a" * 128),
        ("na\x00me\ud800", "name\ufffd"),
        (12345, "m"),  # not text: the claimed name stays
        ("", "m"),
    ],
)
def test_reply_finish_stores_the_model_name_cleaned_and_cut(
    room: Room, alice: User, model: Any, stored: str
) -> None:
    reply = pending(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    services.reply_finish(message_id=reply.pk, attempt=attempt, model=model)
    assert Message.objects.get(pk=reply.pk).model == stored


@pytest.mark.parametrize(
    "error,stored",
    [
        ("bad\x00 thing\udfff", "bad thing\ufffd"),
        ("x" * 5000, "x" * 2000),
        ("   ", "The reply failed."),
        (None, "The reply failed."),
    ],
)
def test_reply_fail_stores_the_reason_cleaned_and_bounded(
    room: Room, alice: User, error: Any, stored: str
) -> None:
    reply = pending(room, alice)
    attempt = services.reply_claim(message_id=reply.pk, model="m")
    assert attempt is not None
    assert services.reply_fail(message_id=reply.pk, attempt=attempt, error=error) is not None
    row = Message.objects.get(pk=reply.pk)
    assert (row.status, row.error) == (Status.FAILED, stored)
