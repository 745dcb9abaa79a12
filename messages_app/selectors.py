"""Reads, and the one serialisation of a message used everywhere."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.aggregates import StringAgg
from django.db.models import Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from messages_app.models import (
    DEFAULT_HANDLE,
    DEFAULT_NAME,
    Assistant,
    Membership,
    Message,
    ReplyChunk,
    Role,
    Room,
    Status,
    User,
    Visibility,
)


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


def room_list(user: Any) -> QuerySet[Room]:
    """The rooms ``user`` may find (``rooms_visible_to``), most recently active first.

    Annotated with ``last_message_at`` (their newest message, or None) and
    ``last_activity`` (that, or the room's creation).
    """
    visible = rooms_visible_to(user).values("pk")
    return (
        Room.objects.filter(pk__in=visible)
        .annotate(
            last_message_at=Max("messages__created_at"),
            last_activity=Coalesce(Max("messages__created_at"), "created_at"),
        )
        .order_by("-last_activity", "-id")
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
