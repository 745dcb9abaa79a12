"""Reads, and the one serialisation of a message used everywhere."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.aggregates import StringAgg
from django.db.models import (
    BigIntegerField,
    Exists,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce

from messages_app.models import Membership, Message, ReplyChunk, Role, Room, Status, Visibility


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


def message_payload(message: Message) -> dict[str, Any]:
    """The JSON form of a message: snapshot, broadcast, HTML page and tests alike.

    Expects ``room`` and ``author`` loaded (``select_related``) to avoid queries.
    """
    author = message.author
    return {
        "id": message.pk,
        "room": message.room.slug,
        "author": author.get_display_name() if author is not None else None,
        "author_id": message.author_id,
        "role": message.role,
        "body": message_text(message),
        "status": message.status,
        "version": message.version,
        "reply_to": message.reply_to_id,
        "client_id": str(message.client_id) if message.client_id else None,
        "model": message.model,
        "error": message.error if message.status == Status.FAILED else "",
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "total_tokens": message.total_tokens,
        },
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
        "finished_at": _iso(message.finished_at),
        # A tombstone: the body is gone (emptied in the database), the row stays.
        "deleted": message.deleted_at is not None,
        "deleted_at": _iso(message.deleted_at),
    }


def message_get(*, message_id: int) -> Message:
    return with_text(Message.objects.select_related("room", "author")).get(pk=message_id)


def room_message_list(*, room: Room, limit: int | None = None) -> list[Message]:
    """The newest ``limit`` messages of the room, oldest first."""
    limit = limit or settings.CHAT_SNAPSHOT_SIZE
    newest = list(
        with_text(Message.objects.filter(room=room).select_related("room", "author")).order_by(
            "-id"
        )[:limit]
    )
    newest.reverse()
    return newest


def room_snapshot(*, room: Room, limit: int | None = None) -> list[dict[str, Any]]:
    return [message_payload(m) for m in room_message_list(room=room, limit=limit)]


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
        .select_related("author")
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
