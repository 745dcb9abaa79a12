"""Each limit of messages_app/limits.py on the real Redis and Postgres: reach it, see
the refusal and its wait, move time on, and it allows again."""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import limits.storage.redis
import pytest
from django.utils import timezone

from messages_app import limits as chat_limits
from messages_app import services
from messages_app.models import Message, Role, Room, Status, User
from messages_app.protocol import ClientError


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Move the clock of the moving windows (and of the waits) forward by ``seconds``."""
    offset = [0.0]
    real = time.time

    def fake_time() -> float:
        return real() + offset[0]

    monkeypatch.setattr(limits.storage.redis, "time", types.SimpleNamespace(time=fake_time))
    monkeypatch.setattr(chat_limits, "now", fake_time)

    def advance(seconds: float) -> None:
        offset[0] += seconds

    return advance


def refusal(action: Callable[[], Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        action()
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after is not None
    return caught.value


# --- posts ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_post_allow_refuses_past_the_burst_until_the_burst_window_passes(
    alice: User, bob: User, settings: Any, clock: Callable[[float], None]
) -> None:
    settings.CHAT_POST_BURST, settings.CHAT_POST_BURST_SECONDS = 10, 10
    for _ in range(10):
        chat_limits.post_allow(user=alice)
    error = refusal(lambda: chat_limits.post_allow(user=alice))
    assert "at most 10 messages in 10 seconds" in error.detail
    assert 0 < error.retry_after <= 10  # type: ignore[operator]
    assert "Try again in" in error.detail
    chat_limits.post_allow(user=bob)  # per user: Bob is not concerned
    clock(10.5)
    chat_limits.post_allow(user=alice)


@pytest.mark.django_db
def test_post_allow_refuses_past_the_sustained_rate_until_the_minute_passes(
    alice: User, settings: Any, clock: Callable[[float], None]
) -> None:
    settings.CHAT_POST_BURST, settings.CHAT_POST_BURST_SECONDS = 10, 10
    settings.CHAT_POSTS_PER_MINUTE = 30
    for _ in range(3):
        for _ in range(10):
            chat_limits.post_allow(user=alice)
        clock(11)  # each burst within its own window
    error = refusal(lambda: chat_limits.post_allow(user=alice))
    assert "at most 30 messages a minute" in error.detail
    # The first post leaves the window 60 s after it was made (33 s ago).
    assert 20 < error.retry_after <= 27.5  # type: ignore[operator]
    clock(error.retry_after + 0.5)  # type: ignore[operator]
    chat_limits.post_allow(user=alice)


@pytest.mark.django_db
def test_post_allow_refused_consumes_nothing(
    alice: User, settings: Any, clock: Callable[[float], None]
) -> None:
    settings.CHAT_POST_BURST, settings.CHAT_POST_BURST_SECONDS = 2, 10
    settings.CHAT_POSTS_PER_MINUTE = 4
    for _ in range(2):
        chat_limits.post_allow(user=alice)
    for _ in range(5):  # refused by the burst: the minute's count must not grow
        refusal(lambda: chat_limits.post_allow(user=alice))
    clock(10.5)
    chat_limits.post_allow(user=alice)
    chat_limits.post_allow(user=alice)  # 4 of 4 a minute: the refused ones did not count


def test_wait_text_reads_as_a_person_would() -> None:
    assert chat_limits.wait_text(0.2) == "1 s"
    assert chat_limits.wait_text(59.1) == "60 s"
    assert chat_limits.wait_text(600) == "10 min"
    assert chat_limits.wait_text(3 * 3600) == "3 h"


# --- rooms --------------------------------------------------------------------------


@pytest.mark.django_db
def test_room_create_check_refuses_past_the_hourly_limit_until_the_hour_passes(
    alice: User, settings: Any, clock: Callable[[float], None]
) -> None:
    settings.CHAT_ROOMS_PER_HOUR = 2
    for _ in range(2):
        chat_limits.room_create_check(user=alice)
        chat_limits.room_created(user=alice)
    error = refusal(lambda: chat_limits.room_create_check(user=alice))
    assert "2 rooms in the last hour" in error.detail
    assert 3000 < error.retry_after <= 3600  # type: ignore[operator]
    clock(3601)
    chat_limits.room_create_check(user=alice)


@pytest.mark.django_db
def test_room_create_check_alone_consumes_nothing(alice: User, settings: Any) -> None:
    settings.CHAT_ROOMS_PER_HOUR = 1
    for _ in range(3):
        chat_limits.room_create_check(user=alice)
    chat_limits.room_created(user=alice)
    refusal(lambda: chat_limits.room_create_check(user=alice))


# --- the daily @gpt token budget -------------------------------------------------------


def finished_reply(room: Room, author: User, tokens: int, *, hours_ago: float = 0) -> Message:
    asked = Message.objects.create(room=room, author=author, role=Role.USER, body="@gpt hi")
    reply = Message.objects.create(
        room=room, role=Role.ASSISTANT, status=Status.DONE, reply_to=asked, total_tokens=tokens
    )
    when = timezone.now() - timedelta(hours=hours_ago)
    Message.objects.filter(pk__in=[asked.pk, reply.pk]).update(created_at=when)
    return reply


@pytest.mark.django_db
def test_gpt_budget_refuses_a_mention_once_the_day_budget_is_used_and_stores_nothing(
    room: Room, alice: User, bob: User, settings: Any
) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 1000
    finished_reply(room, alice, 600, hours_ago=20)
    finished_reply(room, alice, 500, hours_ago=2)
    before = Message.objects.count()
    error = refusal(lambda: services.message_post(room=room, author=alice, body="@gpt more?"))
    assert "budget of 1000 tokens" in error.detail
    assert "(1100 used)" in error.detail
    # The 600 of 20 hours ago leave the window in 4 hours; then 500 < 1000.
    assert 4 * 3600 - 60 < error.retry_after <= 4 * 3600  # type: ignore[operator]
    assert "Try again in 4 h" in error.detail
    assert Message.objects.count() == before
    # A message without @gpt is not concerned; nor is another user.
    assert services.message_post(room=room, author=alice, body="just chatting").created
    assert services.message_post(room=room, author=bob, body="@gpt hello").reply is not None


@pytest.mark.django_db
def test_gpt_budget_allows_again_once_old_replies_leave_the_day(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 1000
    reply = finished_reply(room, alice, 1000, hours_ago=1)
    refusal(lambda: chat_limits.gpt_budget_check(user=alice))
    Message.objects.filter(pk=reply.pk).update(created_at=timezone.now() - timedelta(hours=24.1))
    chat_limits.gpt_budget_check(user=alice)
    assert services.message_post(room=room, author=alice, body="@gpt again").reply is not None


@pytest.mark.django_db
def test_gpt_budget_of_zero_means_no_budget(room: Room, alice: User, settings: Any) -> None:
    settings.GPT_DAILY_TOKENS_PER_USER = 0
    finished_reply(room, alice, 10_000_000)
    assert services.message_post(room=room, author=alice, body="@gpt hi").reply is not None


# --- open sockets -------------------------------------------------------------------


def test_socket_lease_refuses_past_the_limit_and_frees_a_place_on_release(
    settings: Any,
) -> None:
    settings.CHAT_MAX_SOCKETS_PER_USER = 3
    leases = [chat_limits.SocketLease(41) for _ in range(3)]
    for lease in leases:
        lease.acquire()
    assert chat_limits.open_sockets(41) == 3
    extra = chat_limits.SocketLease(41)
    error = refusal(extra.acquire)
    assert "3 connections open" in error.detail
    assert error.retry_after == settings.CHAT_SOCKET_LEASE_SECONDS
    chat_limits.SocketLease(42).acquire()  # per user
    leases[0].release()
    extra.acquire()
    assert chat_limits.open_sockets(41) == 3


def test_socket_lease_of_a_dead_process_expires_and_frees_its_place(settings: Any) -> None:
    settings.CHAT_MAX_SOCKETS_PER_USER = 2
    crashed, alive = chat_limits.SocketLease(43), chat_limits.SocketLease(43)
    crashed.acquire()
    alive.acquire()
    refusal(chat_limits.SocketLease(43).acquire)
    # The crashed process renews nothing: move its lease's expiry to the past,
    # as the lease time passing would.
    client = chat_limits.redis_client()
    seconds, _ = client.time()
    client.zadd(crashed.key, {crashed.id: seconds - 1})
    assert chat_limits.open_sockets(43) == 1
    chat_limits.SocketLease(43).acquire()


def test_socket_lease_renew_pushes_the_expiry_forward(settings: Any) -> None:
    lease = chat_limits.SocketLease(44)
    lease.acquire()
    client = chat_limits.redis_client()
    client.zadd(lease.key, {lease.id: client.time()[0] + 1})
    lease.renew()
    expiry = client.zscore(lease.key, lease.id)
    assert expiry is not None
    assert expiry > client.time()[0] + settings.CHAT_SOCKET_LEASE_SECONDS - 5


def test_limits_keys_carry_the_deployment_prefix(settings: Any) -> None:
    assert chat_limits.sockets_key(7) == f"{settings.CHAT_REDIS_PREFIX}:limits:sockets:7"
    assert chat_limits.key_prefix() == f"{settings.CHAT_REDIS_PREFIX}:limits"


# --- Redis away ---------------------------------------------------------------------


@pytest.mark.django_db
def test_limits_let_the_action_through_and_log_when_redis_is_unreachable(
    alice: User, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.CHAT_POST_BURST = 1
    for _ in range(3):
        chat_limits.post_allow(user=alice)
    chat_limits.room_create_check(user=alice)
    lease = chat_limits.SocketLease(alice.pk)
    lease.acquire()
    lease.renew()
    lease.release()
    assert "Redis unreachable" in caplog.text


@pytest.mark.django_db
def test_room_created_counts_past_the_limit_without_refusing(alice: User, settings: Any) -> None:
    # Two creations that both passed the check: the room of the second exists, so
    # counting it must not fail; the next check refuses.
    settings.CHAT_ROOMS_PER_HOUR = 1
    chat_limits.room_create_check(user=alice)
    chat_limits.room_created(user=alice)
    chat_limits.room_created(user=alice)
    refusal(lambda: chat_limits.room_create_check(user=alice))


@pytest.mark.django_db
def test_gpt_per_minute_refusal_says_when_a_place_frees(
    room: Room, alice: User, settings: Any
) -> None:
    settings.GPT_MAX_REPLIES_PER_MINUTE = 2
    finished_reply(room, alice, 10, hours_ago=50 / 3600)  # frees its place in 10 s
    finished_reply(room, alice, 10, hours_ago=20 / 3600)
    error = refusal(lambda: services.message_post(room=room, author=alice, body="@gpt third"))
    assert "At most 2 @gpt requests a minute; try again in" in error.detail
    assert 5 < error.retry_after <= 10  # type: ignore[operator]
