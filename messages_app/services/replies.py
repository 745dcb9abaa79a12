"""The reply's life: queued, claimed, finished, failed, cancelled, regenerated; the
heartbeat and the watchdog; the asker's @gpt limits."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from messages_app import events, limits, permissions
from messages_app.models import (
    OPEN_STATUSES,
    Assistant,
    Message,
    ReplyChunk,
    ReplyRevision,
    Role,
    Room,
    Status,
    User,
)
from messages_app.protocol import ClientError
from messages_app.selectors import message_get, message_text, usage_attempts
from messages_app.services.appends import clean_model_text, replies_fold
from messages_app.services.common import _broadcast_row

logger = logging.getLogger(__name__)


def _enqueue_reply(message_id: int) -> None:
    """Queue the streaming task once the reply row is committed.

    If the broker cannot take it, the reply is marked failed at once rather than
    left pending until the watchdog gives up on it.
    """
    from chatsite.celery import app  # the Celery app; imported late to keep models importable

    def enqueue() -> None:
        try:
            app.send_task("worker.tasks.stream_reply", args=[message_id])
        except Exception:
            logger.exception("could not queue reply %s", message_id)
            reply_fail(
                message_id=message_id,
                attempt=None,
                error="The reply could not be queued (the task broker is unreachable).",
            )

    transaction.on_commit(enqueue)


def _reply_create(*, message: Message, assistant: Assistant) -> Message:
    """A pending reply of ``assistant`` to ``message``, broadcast and queued on commit."""
    reply = Message.objects.create(
        room=message.room,
        role=Role.ASSISTANT,
        status=Status.PENDING,
        reply_to=message,
        assistant=assistant,
    )
    _broadcast_row(reply)
    _enqueue_reply(reply.pk)
    return reply


def _check_reply_limits(author: User, *, count: int = 1) -> None:
    """Refuse ``count`` new replies beyond the user's limits (open at once, per minute).

    Each reply counts: a message that calls two assistants asks for two. Locks
    the author's row so that two posts of one user are counted one after the
    other, not both against the same count.
    """
    User.objects.select_for_update().filter(pk=author.pk).first()
    asked = Message.objects.filter(role=Role.ASSISTANT, reply_to__author=author)
    open_limit = settings.GPT_MAX_OPEN_REPLIES_PER_USER
    minute_limit = settings.GPT_MAX_REPLIES_PER_MINUTE
    if count > min(open_limit, minute_limit):
        raise ClientError(
            "rate_limited",
            f"This message calls {count} assistants; you may ask for at most "
            f"{min(open_limit, minute_limit)} replies at once.",
        )
    if asked.filter(status__in=OPEN_STATUSES).count() + count > open_limit:
        raise ClientError(
            "rate_limited",
            f"You already have {open_limit} @gpt replies in progress; wait for one to finish."
            if count == 1
            else f"At most {open_limit} replies may be in progress at once and this message "
            f"asks for {count}; wait for one to finish.",
        )
    since = timezone.now() - timedelta(seconds=60)
    # Every attempt counts, a regenerate's too, when it was asked for.
    recent = [at for at, _tokens in usage_attempts(user_id=author.pk, since=since)]
    if len(recent) + count > minute_limit:
        # Allowed again when enough of them are a minute old to leave ``count`` places.
        frees_at = recent[len(recent) + count - 1 - minute_limit] + timedelta(seconds=60)
        wait = max(1.0, (frees_at - timezone.now()).total_seconds())
        raise ClientError(
            "rate_limited",
            f"At most {minute_limit} @gpt requests a minute; "
            f"try again in {limits.wait_text(wait)}.",
            retry_after=wait,
        )
    # The daily token budget (GPT_DAILY_TOKENS_PER_USER), from the usage replies recorded.
    limits.gpt_budget_check(user=author)


# --- the reply's life: claim, append, finish, fail, cancel, retry ----------------


@transaction.atomic
def reply_claim(
    *, message_id: int, model: str, attempt: uuid.UUID | None = None
) -> uuid.UUID | None:
    """Take a pending reply for one streaming attempt: pending → streaming.

    Returns the attempt id every later write of this attempt must name, or None
    when the row is not pending (done, cancelled, or another attempt has it).
    A caller that names its ``attempt`` may send the claim again when its outcome
    is unknown (the connection broke around the commit): a row this attempt
    already holds is its own claim, returned as such.
    """
    attempt = attempt or uuid.uuid4()
    now = timezone.now()
    updated = Message.objects.filter(
        pk=message_id, role=Role.ASSISTANT, status=Status.PENDING
    ).update(
        status=Status.STREAMING,
        attempt=attempt,
        model=_clean_model_name(model),
        version=F("version") + 1,
        updated_at=now,
        heartbeat_at=now,
    )
    if not updated:
        mine = Message.objects.filter(pk=message_id, attempt=attempt, status=Status.STREAMING)
        return attempt if mine.exists() else None
    _broadcast_row(message_get(message_id=message_id))
    return attempt


def _close_reply(
    *, message_id: int, attempt: uuid.UUID | None, status: Status, **fields: Any
) -> Message | None:
    rows = Message.objects.filter(pk=message_id, role=Role.ASSISTANT, status__in=OPEN_STATUSES)
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    now = timezone.now()
    if not rows.update(
        status=status, version=F("version") + 1, updated_at=now, finished_at=now, **fields
    ):
        return None
    # An ended reply holds all its text in its body (its chunks: none after this).
    replies_fold(message_ids=[message_id])
    message = message_get(message_id=message_id)
    _broadcast_row(message)
    return message


# What the model reports is stored only once checked: PositiveIntegerField holds
# 0..2**31-1, the model name has a maximum length, text no NUL or lone surrogate.
_MAX_TOKENS_FIGURE = 2**31 - 1
_MAX_ERROR_LENGTH = 2000


def _clean_model_name(model: Any) -> str:
    if not isinstance(model, str):
        return ""
    name = " ".join(clean_model_text(model).split())
    return name[: Message._meta.get_field("model").max_length]


def _clean_token_count(value: Any) -> int | None:
    """A usage figure as it can be stored: a whole number, at most 2**31-1; None for
    anything else (negative, fractional, text, true/false)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    if value < 0:
        return None
    return min(int(value), _MAX_TOKENS_FIGURE)


def clean_usage(usage: Any) -> dict[str, int | None]:
    """The model's ``usage`` object reduced to the three figures we keep, each checked."""
    usage = usage if isinstance(usage, dict) else {}
    return {
        key: _clean_token_count(usage.get(key))
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


@transaction.atomic
def reply_finish(
    *, message_id: int, attempt: uuid.UUID, model: Any = "", usage: Any = None
) -> Message | None:
    """Mark a streamed reply done, with the model that wrote it and its token usage.

    Both come from the model and are cleaned first (``_clean_model_name``,
    ``clean_usage``): an odd value is dropped, never a reason to fail.
    """
    fields: dict[str, Any] = clean_usage(usage)
    model = _clean_model_name(model)
    if model:
        fields["model"] = model
    return _close_reply(message_id=message_id, attempt=attempt, status=Status.DONE, **fields)


@transaction.atomic
def reply_fail(*, message_id: int, attempt: uuid.UUID | None, error: Any) -> Message | None:
    """Mark an open reply failed with a readable reason; its partial text stays."""
    error = clean_model_text(error if isinstance(error, str) else "")[:_MAX_ERROR_LENGTH]
    error = error.strip() or "The reply failed."
    return _close_reply(message_id=message_id, attempt=attempt, status=Status.FAILED, error=error)


def replies_heartbeat(*, runs: list[tuple[int, uuid.UUID]]) -> int:
    """Record that the runs ``(message id, attempt)`` are alive: ``heartbeat_at = now``.

    One UPDATE for all of them. Not a change anyone sees (the watchdog reads it):
    no version, no broadcast. Returns the rows written (streaming ones only).
    """
    if not runs:
        return 0
    alive = Q()
    for message_id, attempt in runs:
        alive |= Q(pk=message_id, attempt=attempt)
    return Message.objects.filter(alive, status=Status.STREAMING).update(
        heartbeat_at=timezone.now()
    )


@transaction.atomic
def reply_cancel(*, room: Room, message_id: Any, actor: User | None = None) -> Message:
    """Stop an open reply in ``room`` for everyone; the text so far stays.

    ``actor`` is who asks (``permissions.can_cancel_reply``: the asker, the
    room's owners and moderators, staff); None only for the system itself
    (the worker's own stops, tests). The worker learns of it when its next
    guarded append touches no row.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("reply_to")
        .filter(pk=message_id, room=room, role=Role.ASSISTANT)
        .first()
    )
    if message is None:
        raise ClientError("not_found", f"There is no reply {message_id} in this room.")
    if actor is not None:
        role = permissions.role_of(actor, room)
        if not permissions.can_read(actor, room, role):
            raise ClientError("not_member", "You are not a member of this room.")
        if not permissions.can_cancel_reply(actor, room, role, message):
            raise ClientError(
                "forbidden",
                "Only the member who asked, the room's owners and moderators can stop this reply.",
            )
    if message.status not in OPEN_STATUSES:
        raise ClientError("not_streaming", f"Reply {message_id} is already {message.status}.")
    closed = _close_reply(message_id=message.pk, attempt=None, status=Status.CANCELLED)
    assert closed is not None  # noqa: S101 - the row is locked and open
    transaction.on_commit(lambda: events.announce_cancel(message.pk))
    return closed


def replies_fail_stale(*, stale_after: timedelta, queue_timeout: timedelta) -> list[int]:
    """The watchdog: mark failed the open replies that no worker is running.

    - streaming, with no heartbeat for ``stale_after``: its worker stopped
      ("interrupted"); the partial text stays.
    - pending for longer than ``queue_timeout``: no worker started it (the queue
      was that long, or its task was lost), and the message says so. A reply
      waiting behind busy threads is failed only past that timeout.

    Every socket gets the final row. Rows another transaction holds are skipped
    (their owner is alive); each row is closed in its own transaction.
    """
    now = timezone.now()
    streaming = Q(status=Status.STREAMING) & (
        Q(heartbeat_at__lt=now - stale_after)
        | Q(heartbeat_at__isnull=True, updated_at__lt=now - stale_after)
    )
    queued = Q(status=Status.PENDING, updated_at__lt=now - queue_timeout)
    stale = Message.objects.filter(streaming | queued, role=Role.ASSISTANT)
    failed = []
    for message_id in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            row = stale.select_for_update(skip_locked=True).filter(pk=message_id).first()
            if row is None:
                continue
            if row.status == Status.STREAMING:
                error = "The reply was interrupted (its worker stopped) and did not finish."
            else:
                waited = queue_timeout.total_seconds()
                error = (
                    f"The reply waited more than {waited:g} seconds in the queue and no worker "
                    "started it; ask again."
                )
            if _close_reply(message_id=row.pk, attempt=None, status=Status.FAILED, error=error):
                failed.append(row.pk)
    return failed


@transaction.atomic
def reply_regenerate(*, message_id: Any, actor: User | None, room: Room | None = None) -> Message:
    """Make a finished, failed or cancelled reply again: same row, a new attempt.

    The attempt it held is kept as a ``ReplyRevision`` (numbered after the
    earlier ones); the row goes back to pending with no text, no usage and no
    attempt (its next claim gives it a new one), and is queued again. ``room``,
    when given, is the only room the id is looked up in (the socket's).
    ``actor`` must be allowed (``permissions.can_regenerate``); None is the
    system. The asker's @gpt limits apply as to a new reply (it costs tokens),
    except for staff and the system; past ``GPT_MAX_REVISIONS`` earlier
    attempts it is refused (``too_many_revisions``), so no text is dropped.
    A refused regenerate changes nothing.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    rows = (
        Message.objects.select_for_update(of=("self",))
        .select_related("reply_to__author", "room")
        .filter(pk=message_id)
    )
    if room is not None:
        rows = rows.filter(room=room)
    message = rows.first()
    if message is None:
        where = " in this room" if room is not None else ""
        raise ClientError("not_found", f"There is no reply {message_id}{where}.")
    role = None
    if actor is not None:
        role = permissions.role_of(actor, message.room)
        if not permissions.can_read(actor, message.room, role):
            raise ClientError("not_member", "You are not a member of this room.")
    if message.role != Role.ASSISTANT:
        raise ClientError(
            "not_a_reply",
            f"Message {message_id} is not a reply: only the assistant's replies can be "
            "regenerated.",
        )
    if actor is not None and not permissions.can_regenerate(actor, message.room, role, message):
        raise ClientError(
            "forbidden",
            "Only the member who asked, the room's owners and moderators can regenerate "
            "this reply.",
        )
    if message.deleted_at is not None:
        raise ClientError("already_deleted", f"Message {message_id} is deleted.")
    if message.status in OPEN_STATUSES:
        raise ClientError("not_retryable", f"Reply {message_id} is {message.status}.")
    limit = settings.GPT_MAX_REVISIONS
    if message.revision_count >= limit:
        raise ClientError(
            "too_many_revisions",
            f"Reply {message_id} was already regenerated {message.revision_count} times, "
            f"the most this site keeps (GPT_MAX_REVISIONS={limit}); ask again in a new message.",
        )
    asker = message.reply_to.author if message.reply_to is not None else None
    if asker is not None and actor is not None and not permissions.is_staff(actor):
        try:
            _check_reply_limits(asker)
        except ClientError as error:
            if asker.pk == actor.pk:
                raise
            raise ClientError(
                error.code,
                f"The reply is counted against {asker.get_display_name()}'s @gpt limits: "
                f"{error.detail}",
                retry_after=error.retry_after,
            ) from None
    replies_fold(message_ids=[message.pk])  # none: a closed reply is folded already
    current = message_get(message_id=message.pk)
    now = timezone.now()
    ReplyRevision.objects.create(
        message=current,
        number=current.revision_count + 1,
        text=message_text(current),
        status=current.status,
        model=current.model,
        error=current.error,
        prompt_tokens=current.prompt_tokens,
        completion_tokens=current.completion_tokens,
        total_tokens=current.total_tokens,
        requested_at=current.requested_at or current.created_at,
        finished_at=current.finished_at,
        replaced_by=actor,
    )
    Message.objects.filter(pk=message.pk).update(
        status=Status.PENDING,
        body="",
        text_length=0,
        unfolded_length=0,
        error="",
        model="",
        attempt=None,
        heartbeat_at=None,
        finished_at=None,
        prompt_tokens=None,
        completion_tokens=None,
        total_tokens=None,
        requested_at=now,
        revision_count=F("revision_count") + 1,
        version=F("version") + 1,
        updated_at=now,
    )
    ReplyChunk.objects.filter(message_id=message.pk).delete()
    message = message_get(message_id=message.pk)
    _broadcast_row(message)
    _enqueue_reply(message.pk)
    return message
