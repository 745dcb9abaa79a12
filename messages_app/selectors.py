"""Reads, and the one serialisation of a message used everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.postgres.aggregates import StringAgg
from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from messages_app.models import (
    DEFAULT_HANDLE,
    DEFAULT_NAME,
    Assistant,
    Membership,
    Message,
    ReplyChunk,
    ReplyRevision,
    Role,
    Room,
    Status,
    User,
    Visibility,
)
from messages_app.protocol import ClientError


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def with_text(messages: QuerySet[Message]) -> QuerySet[Message]:
    """``messages`` with the text of their unfolded chunks (``unfolded_text``), read in
    the same statement as the row, so that body, chunks and version agree."""
    chunks = (
        ReplyChunk.objects.filter(message=OuterRef("pk"))
        .order_by()
        .values("message")
        .annotate(text=StringAgg("text", delimiter="", order_by="version"))
        .values("text")
    )
    return messages.annotate(unfolded_text=Subquery(chunks))


def message_text(message: Message) -> str:
    """All the text of a message: its body and, while it streams, its chunks.

    Rows read through ``with_text`` carry their chunks; any other row with
    chunks reads them now (a second statement: fine for one row shown alone, as
    in the admin, not for a snapshot).
    """
    if not message.unfolded_length:
        return message.body
    unfolded = getattr(message, "unfolded_text", None)
    if unfolded is None:
        unfolded = "".join(
            ReplyChunk.objects.filter(message=message)
            .order_by("version")
            .values_list("text", flat=True)
        )
    return message.body + unfolded


def usage_of(row: Message | ReplyRevision) -> dict[str, int | None]:
    """The tokens the model reported for a reply (or an earlier attempt of one)."""
    return {
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
    }


def message_payload(message: Message) -> dict[str, Any]:
    """The JSON form of a message: snapshot, broadcast, HTML page and tests alike.

    Expects ``room``, ``author`` and ``assistant`` loaded (``select_related``) to
    avoid queries.
    """
    author = message.author
    assistant = message.assistant if message.assistant_id is not None else None
    return {
        "id": message.pk,
        "room": message.room.slug,
        "author": author.get_display_name() if author is not None else None,
        "author_id": message.author_id,
        "role": message.role,
        # Who writes a reply: {"handle", "name"}; null on a user's message.
        "assistant": {"handle": assistant.handle, "name": assistant.name}
        if assistant is not None
        else None,
        "body": message_text(message),
        "status": message.status,
        "version": message.version,
        "reply_to": message.reply_to_id,
        "client_id": str(message.client_id) if message.client_id else None,
        "model": message.model,
        "error": message.error if message.status == Status.FAILED else "",
        "usage": usage_of(message),
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
        "finished_at": _iso(message.finished_at),
        # When the current attempt was asked for (a regenerate's time, else the
        # row's): the usage line's duration runs from here to finished_at.
        "requested_at": _iso(message.requested_at or message.created_at),
        # Earlier attempts kept (ReplyRevision 1..revisions); the current one is
        # number revisions + 1. Their text: GET /rooms/<slug>/messages/<id>/revisions/.
        "revisions": message.revision_count,
        # A tombstone: the body is gone (emptied in the database), the row stays.
        "deleted": message.deleted_at is not None,
        "deleted_at": _iso(message.deleted_at),
        "edited_at": _iso(message.edited_at),
    }


def message_get(*, message_id: int) -> Message:
    return with_text(Message.objects.select_related("room", "author", "assistant")).get(
        pk=message_id
    )


def room_message_list(*, room: Room, limit: int | None = None) -> list[Message]:
    """The newest ``limit`` messages of the room, oldest first."""
    limit = limit or settings.CHAT_SNAPSHOT_SIZE
    newest = list(
        with_text(
            Message.objects.filter(room=room).select_related("room", "author", "assistant")
        ).order_by("-id")[:limit]
    )
    newest.reverse()
    return newest


def room_snapshot(*, room: Room, limit: int | None = None) -> list[dict[str, Any]]:
    return [message_payload(m) for m in room_message_list(room=room, limit=limit)]


def room_has_older(*, room: Room, before_id: int) -> bool:
    """Whether the room has a message older than ``before_id`` (the timeline index)."""
    return Message.objects.filter(room=room, id__lt=before_id).exists()


def snapshot_has_more(*, room: Room, snapshot: list[dict[str, Any]]) -> bool:
    """Whether the room holds older messages than a full ``snapshot`` (``has_more``)."""
    if len(snapshot) < settings.CHAT_SNAPSHOT_SIZE:
        return False
    return room_has_older(room=room, before_id=snapshot[0]["id"])


def room_snapshot_page(*, room: Room) -> tuple[list[dict[str, Any]], bool]:
    """The snapshot and whether the room holds older messages than it (``has_more``)."""
    messages = room_snapshot(room=room)
    return messages, snapshot_has_more(room=room, snapshot=messages)


@dataclass(frozen=True)
class HistoryPage:
    messages: list[dict[str, Any]]
    has_more: bool  # older messages than the first exist
    has_newer: bool  # newer messages than the last exist


def _timeline(room: Room) -> QuerySet[Message]:
    return with_text(Message.objects.filter(room=room).select_related("room", "author"))


def room_history(*, room: Room, anchor: str, message_id: int, limit: int | None) -> HistoryPage:
    """A page of the room's timeline next to ``message_id``, oldest first.

    ``anchor`` is ``before`` (the ``limit`` messages older than it), ``after``
    (newer) or ``around`` (a window holding it, half older, half newer). Keyset
    pagination on the room timeline index (``room, -id``): ``WHERE room_id = …
    AND id < …`` (or ``>``), never an OFFSET, so every page costs the same however
    deep. Each side reads one row more than it returns to learn whether more exist.
    Raises ``invalid_limit`` outside 1..CHAT_HISTORY_MAX_LIMIT and ``not_found``
    when the room has no message ``message_id`` (another room's, or none).
    """
    maximum = settings.CHAT_HISTORY_MAX_LIMIT
    if limit is None:
        limit = min(settings.CHAT_SNAPSHOT_SIZE, maximum)
    if not 1 <= limit <= maximum:
        raise ClientError("invalid_limit", f"limit must be between 1 and {maximum}.")
    if not Message.objects.filter(room=room, pk=message_id).exists():
        raise ClientError("not_found", f"There is no message {message_id} in this room.")
    timeline = _timeline(room)
    older: list[Message] = []
    newer: list[Message] = []
    has_more = has_newer = True
    if anchor == "before":
        older = list(timeline.filter(id__lt=message_id).order_by("-id")[: limit + 1])
        has_more = len(older) > limit
        older = older[:limit]
    elif anchor == "after":
        newer = list(timeline.filter(id__gt=message_id).order_by("id")[: limit + 1])
        has_newer = len(newer) > limit
        newer = newer[:limit]
    elif anchor == "around":
        before_count = (limit - 1) // 2
        after_count = limit - 1 - before_count  # the anchor itself takes one place
        older = list(timeline.filter(id__lt=message_id).order_by("-id")[: before_count + 1])
        has_more = len(older) > before_count
        older = older[:before_count]
        newer = list(timeline.filter(id__gte=message_id).order_by("id")[: after_count + 2])
        has_newer = len(newer) > after_count + 1
        newer = newer[: after_count + 1]
    else:
        raise ClientError("invalid_history", f"Unknown history anchor {anchor!r}.")
    older.reverse()
    return HistoryPage(
        messages=[message_payload(m) for m in older + newer],
        has_more=has_more,
        has_newer=has_newer,
    )


def rooms_visible_to(user: Any) -> QuerySet[Room]:
    """Every room ``user`` may find: public ones and the private rooms they belong to.

    Staff see every room. Anyone else (signed out, inactive) sees none.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return Room.objects.none()
    if user.is_staff:
        return Room.objects.all()
    return Room.objects.filter(
        Q(visibility=Visibility.PUBLIC) | Q(memberships__user_id=user.pk)
    ).distinct()


# The home page counts a room's unread messages up to this many ("99+" beyond):
# a count that stops there reads at most this many index entries per room.
UNREAD_CAP = 100


class CappedCount(Subquery):
    """``COUNT(*)`` of a subquery that is itself cut (``[:n]``): counting stops at n."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) AS capped)"
    output_field = IntegerField()


def room_list(user: Any) -> QuerySet[Room]:
    """The rooms ``user`` may find (``rooms_visible_to``): rooms with unread messages
    first, then most recently active first. One query, whatever the number of rooms.

    Annotated with ``last_message_at`` (their newest message, or None),
    ``last_activity`` (that, or the room's creation) and ``unread``: the messages
    of others (the assistant's too) after the user's read position, not deleted,
    counted up to ``UNREAD_CAP``; 0 in a room the user is not a member of.
    """
    visible = rooms_visible_to(user).values("pk")
    # NULL for a room the user is not a member of: no message is after NULL.
    last_read = (
        Membership.objects.filter(room=OuterRef("pk"), user_id=user.pk)
        .order_by()
        .values("last_read_id")[:1]
    )
    news = (
        Message.objects.filter(
            room=OuterRef("pk"), pk__gt=OuterRef("last_read"), deleted_at__isnull=True
        )
        .exclude(author_id=user.pk)
        .order_by()
        .values("pk")
    )
    return (
        Room.objects.filter(pk__in=visible)
        .annotate(
            last_read=Subquery(last_read, output_field=BigIntegerField()),
            last_message_at=Max("messages__created_at"),
            last_activity=Coalesce(Max("messages__created_at"), "created_at"),
        )
        .annotate(unread=CappedCount(news[:UNREAD_CAP]), has_unread=Exists(news))
        .order_by("-has_unread", "-last_activity", "-id")
    )


def member_list(*, room_id: int) -> list[dict[str, Any]]:
    """The room's members for the members panel and the ``members`` frame.

    Owners first, then moderators, then members; each by when they joined.
    """
    order = {"owner": 0, "moderator": 1, "member": 2}
    rows = Membership.objects.filter(room_id=room_id).select_related("user").order_by("id")
    members = [
        {
            "user_id": m.user_id,
            "name": m.user.get_display_name(),
            "username": m.user.get_username(),
            "role": m.role,
        }
        for m in rows
    ]
    return sorted(members, key=lambda m: order.get(m["role"], 3))


def reply_context_messages(*, reply: Message, limit: int, max_chars: int) -> list[Message]:
    """The room's messages the model sees for ``reply``: newest first cut to the budget.

    Everything before the placeholder that has text, except replies that are not
    done (partial, failed or cancelled text), oldest first.
    """
    candidates = (
        Message.objects.filter(room_id=reply.room_id, id__lt=reply.pk)
        .exclude(body="")
        .exclude(Q(role=Role.ASSISTANT) & ~Q(status=Status.DONE))
        .select_related("author", "assistant")
        .order_by("-id")[:limit]
    )
    chosen: list[Message] = []
    used = 0
    for message in candidates:
        used += len(message.body)
        if chosen and used > max_chars:
            break
        chosen.append(message)
    chosen.reverse()
    return chosen


# --- revisions ----------------------------------------------------------------------


def revision_payload(revision: ReplyRevision, *, deleted: bool = False) -> dict[str, Any]:
    """An earlier attempt of a reply, as the revisions endpoint sends it."""
    return {
        "number": revision.number,
        "body": "" if deleted else revision.text,
        "status": revision.status,
        "model": revision.model,
        "error": "" if deleted or revision.status != Status.FAILED else revision.error,
        "usage": usage_of(revision),
        "requested_at": _iso(revision.requested_at),
        "finished_at": _iso(revision.finished_at),
        "replaced_at": _iso(revision.replaced_at),
    }


def reply_revisions(*, message: Message) -> list[dict[str, Any]]:
    """Every earlier attempt of ``message``, oldest first (empty text once it is deleted)."""
    deleted = message.deleted_at is not None
    return [
        revision_payload(r, deleted=deleted)
        for r in ReplyRevision.objects.filter(message=message).order_by("number")
    ]


# --- usage: one source of truth for the usage page, the admin and the budget ---------
#
# Every attempt of a reply counts for the member who asked (the author of the
# message it answers), at the time it was asked for: the reply row's current
# attempt at ``requested_at`` (or, for its first, ``created_at``), each earlier
# one (a ReplyRevision) at its own ``requested_at``. Tokens are what the model
# reported (``total_tokens``); an attempt without a figure (still open, failed
# before the usage arrived) counts as an attempt with no tokens.


def _reply_attempts(user_id: int) -> QuerySet[Message]:
    return Message.objects.filter(role=Role.ASSISTANT, reply_to__author_id=user_id).annotate(
        at=Coalesce("requested_at", "created_at")
    )


def _revision_attempts(user_id: int) -> QuerySet[ReplyRevision]:
    return ReplyRevision.objects.filter(message__reply_to__author_id=user_id).annotate(
        at=F("requested_at")
    )


@dataclass(frozen=True)
class Usage:
    replies: int  # attempts asked for (each regenerate is one more)
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage_since(*, user_id: int, since: datetime | None = None) -> Usage:
    """What ``user_id``'s replies used since ``since`` (all time if None)."""
    totals = [0, 0, 0, 0]
    for rows in (_reply_attempts(user_id), _revision_attempts(user_id)):
        if since is not None:
            rows = rows.filter(at__gte=since)
        got = rows.aggregate(
            n=Count("pk"),
            p=Sum("prompt_tokens"),
            c=Sum("completion_tokens"),
            t=Sum("total_tokens"),
        )
        for i, key in enumerate(("n", "p", "c", "t")):
            totals[i] += got[key] or 0
    return Usage(*totals)


def usage_attempts(
    *, user_id: int, since: datetime, with_tokens: bool = False
) -> list[tuple[datetime, int]]:
    """``(asked at, total tokens or 0)`` of ``user_id``'s attempts since ``since``,
    oldest first; only those with a token figure when ``with_tokens``."""
    found: list[tuple[datetime, int]] = []
    for rows in (_reply_attempts(user_id), _revision_attempts(user_id)):
        rows = rows.filter(at__gte=since)
        if with_tokens:
            rows = rows.filter(total_tokens__isnull=False)
        found += [(at, tokens or 0) for at, tokens in rows.values_list("at", "total_tokens")]
    return sorted(found, key=lambda pair: pair[0])


def usage_periods(now: datetime | None = None) -> dict[str, datetime]:
    """The starts of "today" and "this month" in ``settings.TIME_ZONE`` (UTC unless set)."""
    local = timezone.localtime(now or timezone.now())
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"today": day, "month": day.replace(day=1)}


def _tokens_subquery(rows: QuerySet[Any], user_field: str) -> Subquery:
    return Subquery(
        rows.order_by().values(user_field).annotate(t=Sum("total_tokens")).values("t"),
        output_field=IntegerField(),
    )


def users_with_usage(users: QuerySet[Any], *, now: datetime | None = None) -> QuerySet[Any]:
    """``users`` annotated with ``tokens_today``, ``tokens_month`` and ``tokens_total``:
    the same counting as ``usage_since``, in one statement for a page of users."""
    periods = usage_periods(now)
    annotations: dict[str, Any] = {}
    for name, since in (("today", periods["today"]), ("month", periods["month"]), ("total", None)):
        replies = Message.objects.filter(
            role=Role.ASSISTANT, reply_to__author_id=OuterRef("pk")
        ).annotate(at=Coalesce("requested_at", "created_at"))
        revisions = ReplyRevision.objects.filter(
            message__reply_to__author_id=OuterRef("pk")
        ).annotate(at=F("requested_at"))
        if since is not None:
            replies = replies.filter(at__gte=since)
            revisions = revisions.filter(at__gte=since)
        annotations[f"tokens_{name}"] = Coalesce(
            _tokens_subquery(replies, "reply_to__author_id"), 0
        ) + Coalesce(_tokens_subquery(revisions, "message__reply_to__author_id"), 0)
    return users.annotate(**annotations)


def reply_assistant(*, message_id: int) -> Assistant | None:
    """The assistant that writes reply ``message_id`` (None: none, or no such row)."""
    return Assistant.objects.filter(replies__pk=message_id).first()


def assistants_called(handles: list[str]) -> list[Assistant]:
    """The active assistants among ``handles`` (as ``mentions.mentioned_handles`` gives
    them), in that order, at most ``GPT_MAX_ASSISTANTS_PER_MESSAGE``: the first
    mentioned win. Unknown and inactive handles are left out without a word."""
    if not handles:
        return []
    found = {a.handle: a for a in Assistant.objects.filter(handle__in=handles, active=True)}
    called = [found[h] for h in handles if h in found]
    return called[: settings.GPT_MAX_ASSISTANTS_PER_MESSAGE]


def default_assistant_missing() -> bool:
    """Whether there is no ``@gpt`` row at all (not even an inactive one).

    Migration ``assistants`` makes it; a database flushed or loaded without it
    (tests do both) still has the default: ``services.assistant_default`` makes
    it again when it is called, and the page offers it meanwhile.
    """
    return not Assistant.objects.filter(handle=DEFAULT_HANDLE).exists()


def active_assistants() -> list[dict[str, str]]:
    """The assistants a room page offers and highlights: {"handle", "name"}."""
    rows = [
        {"handle": handle, "name": name}
        for handle, name in Assistant.objects.filter(active=True)
        .order_by("handle")
        .values_list("handle", "name")
    ]
    if not any(row["handle"] == DEFAULT_HANDLE for row in rows) and default_assistant_missing():
        rows.insert(0, {"handle": DEFAULT_HANDLE, "name": DEFAULT_NAME})
    return rows


def mention_candidates(*, room: Room) -> list[dict[str, str]]:
    """What the composer offers after ``@``: the active assistants, then the members."""
    members = (
        User.objects.filter(memberships__room=room, is_active=True)
        .order_by("username")
        .only("username", "display_name")
    )
    return [
        *({"kind": "assistant", **a} for a in active_assistants()),
        *(
            {"kind": "member", "handle": u.get_username(), "name": u.get_display_name()}
            for u in members
        ),
    ]
