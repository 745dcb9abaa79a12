"""Every write of a Room or Message row, each followed by its broadcast on commit.

Consumers, views, admin actions and tasks call these; none of them saves a
message or sends to a group on its own (docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from messages_app import events, limits
from messages_app.models import OPEN_STATUSES, Message, Role, Room, Status, User
from messages_app.protocol import ClientError
from messages_app.selectors import message_get, message_payload

logger = logging.getLogger(__name__)

# ``@gpt`` as a word of its own: not inside an address (me@gpt.com), a longer
# handle (@gpt4, @gpt-bot) or a domain (@gpt.com); any case.
MENTION_RE = re.compile(r"(?<![\w@.+-])@gpt(?![\w-]|\.\w)", re.IGNORECASE)
_CONTROL_CHARS = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f"}


@dataclass(frozen=True)
class PostResult:
    message: Message
    reply: Message | None
    created: bool


def mentions_gpt(body: str) -> bool:
    return MENTION_RE.search(body) is not None


def clean_text(text: str) -> str:
    """Text as it can be stored: NUL and other control characters dropped.

    Postgres refuses NUL in text; the others are invisible and only confuse.
    Newlines and tabs stay; CRLF becomes LF.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if any(ch in _CONTROL_CHARS for ch in text):
        text = "".join(ch for ch in text if ch not in _CONTROL_CHARS)
    return text


def _clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ClientError("invalid_body", "The message body must be a string.")
    body = unicodedata.normalize("NFC", clean_text(body))
    if not body.strip():
        raise ClientError("empty_body", "The message is empty.")
    limit = settings.CHAT_MAX_BODY_LENGTH
    if len(body) > limit:
        raise ClientError(
            "body_too_long", f"The message is {len(body)} characters; the limit is {limit}."
        )
    return body


def _broadcast_row(message: Message) -> None:
    """Send the row as it is now to its room once the transaction commits."""
    event = events.message_event(message_payload(message))
    room_id = message.room_id
    transaction.on_commit(lambda: events.send_to_room(room_id, event))


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


# --- accounts -------------------------------------------------------------------


@transaction.atomic
def user_create(*, username: str, password: str, display_name: str = "") -> User:
    """Create an account; the caller has validated the username and the password."""
    display_name = " ".join(clean_text(display_name).split())
    return User.objects.create_user(username=username, password=password, display_name=display_name)


# --- rooms --------------------------------------------------------------------


@transaction.atomic
def room_create(
    *, name: str, created_by: User | None, slug: str = "", granularity: str = ""
) -> Room:
    name = " ".join(clean_text(name if isinstance(name, str) else "").split())
    if not name:
        raise ClientError("invalid_name", "A room needs a name.")
    max_name = Room._meta.get_field("name").max_length
    if len(name) > max_name:
        raise ClientError("name_too_long", f"A room name is at most {max_name} characters.")
    if granularity not in ("", *settings.GRANULARITIES):
        raise ClientError("invalid_granularity", f"Unknown granularity {granularity!r}.")
    max_slug = Room._meta.get_field("slug").max_length
    base = slugify(slug or name)[:max_slug].strip("-")
    if not base:
        raise ClientError("invalid_slug", "The room name needs letters or digits for its address.")
    if slug and base != slug:
        raise ClientError(
            "invalid_slug", "An address may only hold lowercase letters, digits and hyphens."
        )
    candidate, n = base, 1
    while Room.objects.filter(slug=candidate).exists():
        if slug:
            raise ClientError("slug_taken", f"The address {slug!r} is taken.")
        n += 1
        suffix = f"-{n}"
        candidate = base[: max_slug - len(suffix)] + suffix
    return Room.objects.create(
        name=name, slug=candidate, created_by=created_by, granularity=granularity
    )


# --- posting ------------------------------------------------------------------


def message_post(
    *, room: Room, author: User, body: Any, client_id: uuid.UUID | str | None = None
) -> PostResult:
    """Store a user's message, and a pending @gpt placeholder if it mentions @gpt.

    The same ``client_id`` from the same author returns the stored message
    (a resend after a reconnect) and stores nothing.
    """
    body = _clean_body(body)
    if client_id is not None and not isinstance(client_id, uuid.UUID):
        try:
            client_id = uuid.UUID(str(client_id))
        except ValueError:
            raise ClientError("invalid_client_id", "client_id must be a UUID.") from None
    try:
        return _message_post(room=room, author=author, body=body, client_id=client_id)
    except IntegrityError:
        # A concurrent resend of the same client_id won the race: return its row.
        if client_id is None:
            raise
        return _existing_post(author=author, client_id=client_id)


def _existing_post(*, author: User, client_id: uuid.UUID) -> PostResult:
    message = Message.objects.select_related("room", "author").get(
        author=author, client_id=client_id
    )
    reply = message.replies.select_related("room").order_by("id").first()
    return PostResult(message=message, reply=reply, created=False)


@transaction.atomic
def _message_post(
    *, room: Room, author: User, body: str, client_id: uuid.UUID | None
) -> PostResult:
    if (
        client_id is not None
        and Message.objects.filter(author=author, client_id=client_id).exists()
    ):
        return _existing_post(author=author, client_id=client_id)
    wants_reply = mentions_gpt(body)
    if wants_reply:
        _check_reply_limits(author)
    message = Message.objects.create(
        room=room, author=author, role=Role.USER, body=body, client_id=client_id
    )
    _broadcast_row(message)
    reply = None
    if wants_reply:
        reply = Message.objects.create(
            room=room, role=Role.ASSISTANT, status=Status.PENDING, reply_to=message
        )
        _broadcast_row(reply)
        _enqueue_reply(reply.pk)
    return PostResult(message=message, reply=reply, created=True)


def _check_reply_limits(author: User) -> None:
    """Refuse a new @gpt request beyond the user's limits (open at once, per minute).

    Locks the author's row so that two posts of one user are counted one after
    the other, not both against the same count.
    """
    User.objects.select_for_update().filter(pk=author.pk).first()
    asked = Message.objects.filter(role=Role.ASSISTANT, reply_to__author=author)
    open_limit = settings.GPT_MAX_OPEN_REPLIES_PER_USER
    if asked.filter(status__in=OPEN_STATUSES).count() >= open_limit:
        raise ClientError(
            "rate_limited",
            f"You already have {open_limit} @gpt replies in progress; wait for one to finish.",
        )
    minute_limit = settings.GPT_MAX_REPLIES_PER_MINUTE
    since = timezone.now() - timedelta(seconds=60)
    recent = list(
        asked.filter(created_at__gte=since)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) >= minute_limit:
        # Allowed again when enough of them are a minute old to leave one place.
        frees_at = recent[len(recent) - minute_limit] + timedelta(seconds=60)
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
def reply_claim(*, message_id: int, model: str) -> uuid.UUID | None:
    """Take a pending reply for one streaming attempt: pending → streaming.

    Returns the attempt id every later write of this attempt must name, or None
    when the row is not pending (done, cancelled, or another attempt has it).
    """
    attempt = uuid.uuid4()
    updated = Message.objects.filter(
        pk=message_id, role=Role.ASSISTANT, status=Status.PENDING
    ).update(
        status=Status.STREAMING,
        attempt=attempt,
        model=model,
        version=F("version") + 1,
        updated_at=timezone.now(),
    )
    if not updated:
        return None
    _broadcast_row(message_get(message_id=message_id))
    return attempt


_APPEND_SQL = f"""
    UPDATE {Message._meta.db_table}
       SET body = body || %s, version = version + 1, updated_at = now()
     WHERE id = %s AND attempt = %s AND status = 'streaming'
 RETURNING version, char_length(body), room_id
"""  # noqa: S608 - the table name is ours, every value is a parameter


# The appends of many replies (one each) in one statement: one round trip, one commit.
_APPEND_MANY_SQL = f"""
    UPDATE {Message._meta.db_table} AS m
       SET body = m.body || a.text, version = m.version + 1, updated_at = now()
      FROM (VALUES {{values}}) AS a (id, attempt, text)
     WHERE m.id = a.id AND m.attempt = a.attempt AND m.status = 'streaming'
 RETURNING m.id, m.version, char_length(m.body), m.room_id
"""  # noqa: S608 - the table name is ours, every value is a parameter


@dataclass(frozen=True)
class Appended:
    version: int
    offset: int


def reply_append(
    *, message_id: int, attempt: uuid.UUID, text: str, batched: bool = False
) -> Appended | None:
    """Append ``text`` to a streaming reply in SQL and broadcast the delta.

    Returns None when the row is no longer this attempt's to write (cancelled,
    finished, taken over): the caller stops. One UPDATE is atomic on its own, so
    this is not wrapped in a transaction of its own: in autocommit the delta is
    sent right after the statement commits, inside a caller's atomic block when
    that commits.

    ``batched`` (the streaming runs of a worker): the append is written by this
    process's append thread together with those other runs queued meanwhile
    (``_AppendQueue``); it returns, as here, once the row is committed and the
    delta published. Inside an atomic block it is written here, in that block.
    """
    text = clean_text(text)
    if not text:
        return None if not _is_writable(message_id, attempt) else _current(message_id)
    if batched and not connection.in_atomic_block:
        return _appends.append(message_id, attempt, text)
    row = _append_row(message_id, attempt, text)
    if row is None:
        return None
    appended, room_id, event = row
    transaction.on_commit(lambda: events.send_to_room(room_id, event))
    return appended


def _append_row(
    message_id: int, attempt: uuid.UUID, text: str
) -> tuple[Appended, int, dict[str, Any]] | None:
    """The UPDATE of one append: what it wrote, the room, and the delta to publish."""
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_SQL, [text, message_id, attempt])
        row = cursor.fetchone()
    return None if row is None else _written(message_id, text, *row)


def _written(
    message_id: int, text: str, version: int, length: int, room_id: int
) -> tuple[Appended, int, dict[str, Any]]:
    """An append the UPDATE wrote (its RETURNING row): the result, the room, the delta."""
    offset = length - len(text)
    event = events.delta_event(message_id=message_id, version=version, offset=offset, text=text)
    return Appended(version=version, offset=offset), room_id, event


def _append_rows(
    batch: list[_QueuedAppend],
) -> list[tuple[Appended, int, dict[str, Any]] | None]:
    """One UPDATE for the appends of several replies (at most one each)."""
    values = ", ".join(["(%s::bigint, %s::uuid, %s::text)"] * len(batch))
    params: list[Any] = []
    for request in batch:
        params += [request.message_id, request.attempt, request.text]
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_MANY_SQL.format(values=values), params)
        written = {row[0]: row[1:] for row in cursor.fetchall()}
    return [
        _written(r.message_id, r.text, *written[r.message_id]) if r.message_id in written else None
        for r in batch
    ]


@dataclass(eq=False)
class _QueuedAppend:
    message_id: int
    attempt: uuid.UUID
    text: str
    done: threading.Event = field(default_factory=threading.Event)
    result: Appended | None = None
    error: BaseException | None = None


class _AppendQueue:
    """The appends of every streaming run of this process, written together.

    A run queues its append and waits (each run has at most one queued, so a
    batch holds at most one per reply). The append thread takes all that are
    queued and writes them in one UPDATE (``_APPEND_MANY_SQL``): one round trip
    and one commit, so one WAL flush, for all of them, on the one connection
    this thread keeps; then publishes their deltas in one Redis round trip; then
    lets the runs go on. When one run streams, that is the UPDATE
    ``reply_append`` makes; with a hundred, the writes of a whole round of tokens
    cost about one. Runs need no connection of their own while they stream
    (chatsite/settings.py, the pool).
    """

    MAX_BATCH = 500
    IDLE = 1.0  # seconds without appends before the connection goes back to the pool

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_QueuedAppend] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def append(self, message_id: int, attempt: uuid.UUID, text: str) -> Appended | None:
        request = _QueuedAppend(message_id, attempt, text)
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="reply-appends", daemon=True)
                self._thread.start()
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.IDLE)
            except queue.Empty:
                connection.close()  # idle: back to the pool (or closed, without one)
                first = self._queue.get()
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as error:
                connection.close()  # a broken connection is replaced on the next use
                if len(batch) > 1:
                    self._write_each(batch)  # one bad append must not fail the others
                else:
                    batch[0].error = error
            finally:
                for request in batch:
                    request.done.set()

    def _write(self, batch: list[_QueuedAppend]) -> None:
        if len(batch) == 1:
            rows = [_append_row(batch[0].message_id, batch[0].attempt, batch[0].text)]
        else:
            rows = _append_rows(batch)
        self._publish(batch, rows)

    def _write_each(self, batch: list[_QueuedAppend]) -> None:
        for request in batch:
            try:
                row = _append_row(request.message_id, request.attempt, request.text)
            except Exception as error:
                connection.close()
                request.error = error
                continue
            self._publish([request], [row])

    @staticmethod
    def _publish(
        batch: list[_QueuedAppend], rows: list[tuple[Appended, int, dict[str, Any]] | None]
    ) -> None:
        """Committed: publish the deltas (in queue order) and hand each run its result."""
        published = []
        for request, row in zip(batch, rows, strict=True):
            if row is not None:
                request.result, room_id, event = row
                published.append((room_id, event))
        events.send_to_rooms(published)


_appends = _AppendQueue()


def _is_writable(message_id: int, attempt: uuid.UUID) -> bool:
    return Message.objects.filter(pk=message_id, attempt=attempt, status=Status.STREAMING).exists()


def _current(message_id: int) -> Appended:
    message = Message.objects.only("version", "body").get(pk=message_id)
    return Appended(version=message.version, offset=len(message.body))


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
    message = message_get(message_id=message_id)
    _broadcast_row(message)
    return message


@transaction.atomic
def reply_finish(
    *, message_id: int, attempt: uuid.UUID, model: str = "", usage: dict[str, int] | None = None
) -> Message | None:
    """Mark a streamed reply done, with the model that wrote it and its token usage."""
    usage = usage or {}
    fields: dict[str, Any] = {
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
    if model:
        fields["model"] = model
    return _close_reply(message_id=message_id, attempt=attempt, status=Status.DONE, **fields)


@transaction.atomic
def reply_fail(*, message_id: int, attempt: uuid.UUID | None, error: str) -> Message | None:
    """Mark an open reply failed with a readable reason; its partial text stays."""
    error = clean_text(error)[:2000] or "The reply failed."
    return _close_reply(message_id=message_id, attempt=attempt, status=Status.FAILED, error=error)


@transaction.atomic
def reply_cancel(*, room: Room, message_id: Any) -> Message:
    """Stop an open reply in ``room`` for everyone; the text so far stays.

    The worker learns of it when its next guarded append touches no row.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    message = (
        Message.objects.select_for_update()
        .filter(pk=message_id, room=room, role=Role.ASSISTANT)
        .first()
    )
    if message is None:
        raise ClientError("not_found", f"There is no reply {message_id} in this room.")
    if message.status not in OPEN_STATUSES:
        raise ClientError("not_streaming", f"Reply {message_id} is already {message.status}.")
    closed = _close_reply(message_id=message.pk, attempt=None, status=Status.CANCELLED)
    assert closed is not None  # noqa: S101 - the row is locked and open
    transaction.on_commit(lambda: events.announce_cancel(message.pk))
    return closed


def replies_fail_stale(*, older_than: timedelta) -> list[int]:
    """Mark failed ("interrupted") every open reply not written for ``older_than``.

    The watchdog for replies whose worker died: their partial text stays, and
    every socket gets the final row. Rows another transaction holds are skipped
    (their owner is alive); each row is closed in its own transaction.
    """
    cutoff = timezone.now() - older_than
    failed = []
    stale_ids = Message.objects.filter(
        role=Role.ASSISTANT, status__in=OPEN_STATUSES, updated_at__lt=cutoff
    ).values_list("pk", flat=True)
    for message_id in list(stale_ids):
        with transaction.atomic():
            row = (
                Message.objects.select_for_update(skip_locked=True)
                .filter(pk=message_id, status__in=OPEN_STATUSES, updated_at__lt=cutoff)
                .first()
            )
            if row is None:
                continue
            error = (
                "The reply was interrupted (its worker stopped) and did not finish."
                if row.status == Status.STREAMING
                else "The reply never started (no worker took it)."
            )
            if _close_reply(message_id=row.pk, attempt=None, status=Status.FAILED, error=error):
                failed.append(row.pk)
    return failed


@transaction.atomic
def reply_retry(*, message_id: int) -> Message:
    """Start a failed or cancelled reply again from nothing: back to pending, requeued."""
    message = Message.objects.select_for_update().filter(pk=message_id).first()
    if message is None or message.role != Role.ASSISTANT:
        raise ClientError("not_found", f"There is no reply {message_id}.")
    if message.status not in (Status.FAILED, Status.CANCELLED):
        raise ClientError("not_retryable", f"Reply {message_id} is {message.status}.")
    Message.objects.filter(pk=message.pk).update(
        status=Status.PENDING,
        body="",
        error="",
        attempt=None,
        finished_at=None,
        prompt_tokens=None,
        completion_tokens=None,
        total_tokens=None,
        version=F("version") + 1,
        updated_at=timezone.now(),
    )
    message = message_get(message_id=message.pk)
    _broadcast_row(message)
    _enqueue_reply(message.pk)
    return message
