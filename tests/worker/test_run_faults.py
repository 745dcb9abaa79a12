"""The streaming run when the database blinks, a service raises, or a cap is reached:
in this process, against the real model server (openai SDK over HTTP) and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError

from messages_app import services
from messages_app.models import Message, Room, Status, User
from tests.live import ModelServer
from worker import appends as appends_module
from worker import streaming

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "one two three four five six seven eight"


@pytest.fixture
def model(model_server: ModelServer, settings: Any) -> Iterator[ModelServer]:
    settings.OPENAI_BASE_URL = f"{model_server.url}/v1"
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MODEL = "test-model"
    model_server.control(text=TEXT, tokens_per_second=0, first_token_delay=0)
    yield model_server


@pytest.fixture(autouse=True)
def _no_task_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.replies, "_enqueue_reply", lambda message_id: None)


@pytest.fixture
def token_room(db: None) -> Room:
    return Room.objects.create(name="Tokens", slug="tokens", granularity="token")


def ask(room: Room, user: User) -> Message:
    reply = services.message_post(room=room, author=user, body="@gpt count").reply
    assert reply is not None
    return reply


def row(message: Message) -> Message:
    return Message.objects.get(pk=message.pk)


def failing_appends(
    monkeypatch: pytest.MonkeyPatch, *, succeed_first: int, then_fail: int
) -> list[int]:
    """``reply_appends_write`` that works ``succeed_first`` times, then raises a
    transient error ``then_fail`` times (-1: for ever), then works again."""
    real = services.reply_appends_write
    calls: list[int] = []

    def flaky(*, appends: list[services.ReplyAppend]) -> Any:
        calls.append(1)
        n = len(calls)
        if n > succeed_first and (then_fail < 0 or n <= succeed_first + then_fail):
            raise OperationalError("terminating connection due to administrator command")
        return real(appends=appends)

    monkeypatch.setattr(appends_module.services, "reply_appends_write", flaky)
    return calls


def test_run_rides_out_a_database_blink_and_keeps_every_word(
    model: ModelServer,
    token_room: Room,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.GPT_DB_RETRY_FOR = 30
    model.control(tokens_per_second=40)  # a write per token
    calls = failing_appends(monkeypatch, succeed_first=1, then_fail=4)
    reply = ask(token_room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "done"
    done = row(reply)
    assert (done.status, done.body) == (Status.DONE, TEXT)
    assert len(calls) >= 6  # the failed write was sent again until it went in


def test_run_past_gpt_db_retry_for_ends_failed_with_the_text_so_far_and_a_reason(
    model: ModelServer,
    token_room: Room,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.GPT_DB_RETRY_FOR = 0.2
    model.control(tokens_per_second=40)  # a write per token
    failing_appends(monkeypatch, succeed_first=1, then_fail=-1)
    reply = ask(token_room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    failed = row(reply)
    assert failed.status == Status.FAILED
    # what the one write that went in holds: the start of the reply, whole tokens
    assert failed.body and failed.body != TEXT and TEXT.startswith(failed.body)
    assert TEXT[len(failed.body)] == " "
    assert failed.error == (
        "The reply stopped: the database could not be reached for 0.2 seconds "
        "(GPT_DB_RETRY_FOR). The text so far is kept."
    )


def test_run_whose_finish_raises_still_ends_failed(
    model: ModelServer, room: Room, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise ValueError("a value the database refuses")

    monkeypatch.setattr(streaming.services, "reply_finish", broken)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    failed = row(reply)
    assert (failed.status, failed.body) == (Status.FAILED, TEXT)
    assert failed.error == "The reply stopped because of an internal error."


def test_run_whose_fail_raises_falls_back_to_a_plain_reason(
    model: ModelServer, room: Room, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    model.control(error_after=2)
    real = services.reply_fail

    def refuses_odd_reasons(*, message_id: int, attempt: Any, error: str) -> Any:
        if "internal error" not in error:
            raise ValueError("refused")
        return real(message_id=message_id, attempt=attempt, error=error)

    monkeypatch.setattr(streaming.services, "reply_fail", refuses_odd_reasons)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    assert row(reply).error == "The reply stopped because of an internal error."


def test_run_cut_at_gpt_max_reply_chars_ends_failed_saying_so(
    model: ModelServer, room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_REPLY_CHARS = 100
    long_text = " ".join(f"word{n}" for n in range(60))  # 353 characters
    model.control(text=long_text)
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    cut = row(reply)
    assert cut.body == long_text[:100]
    assert cut.error == (
        "The reply reached the limit of 100 characters (GPT_MAX_REPLY_CHARS) and was cut here."
    )


def test_run_asks_for_gpt_max_reply_tokens_and_says_when_the_model_stopped_there(
    model: ModelServer, room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_REPLY_TOKENS = 3
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    assert model.stats()["last_request"]["max_tokens"] == 3
    cut = row(reply)
    assert cut.body == "one two three"
    assert cut.error == (
        "The reply reached the limit of 3 tokens (GPT_MAX_REPLY_TOKENS) and was cut here."
    )


def test_run_under_the_caps_sends_max_tokens_and_ends_done(
    model: ModelServer, room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_REPLY_TOKENS = 8  # exactly the reply's tokens: not cut
    reply = ask(room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "done"
    assert model.stats()["last_request"]["max_tokens"] == 8
    assert (row(reply).body, row(reply).error) == (TEXT, "")


def test_run_sends_an_append_of_unknown_outcome_again_exactly_once(
    model: ModelServer,
    token_room: Room,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    # given a write that commits but whose result is lost, and a database that then
    # stays away for all of GPT_DB_RETRY_FOR before it comes back
    settings.GPT_DB_RETRY_FOR = 0.2
    model.control(tokens_per_second=40)
    real = services.reply_appends_write
    calls: list[int] = []

    def lost_then_away(*, appends: list[services.ReplyAppend]) -> Any:
        calls.append(1)
        if len(calls) == 2:
            real(appends=appends)
            raise OperationalError("server closed the connection unexpectedly")
        if 3 <= len(calls) <= 5:
            raise OperationalError("connection refused")
        return real(appends=appends)

    monkeypatch.setattr(appends_module.services, "reply_appends_write", lost_then_away)
    reply = ask(token_room, alice)
    assert streaming.ReplyRun(reply.pk).run() == "failed"
    # then the reply holds the start of the text, the lost write's text once
    failed = row(reply)
    assert failed.body.startswith("one two") and TEXT.startswith(failed.body)
    assert failed.body.count("two") == 1
    assert "could not be reached" in failed.error
