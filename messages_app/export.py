"""A room's messages as a download: Markdown to read, JSON to process.

Both are produced as they are sent: the messages are read a page at a time
(``CHAT_EXPORT_PAGE_SIZE``, keyset pagination on the room's timeline index) and
each page is written out before the next is read, so exporting a room of any size
holds one page in memory. The generators are asynchronous: Django serves a
synchronous iterator under ASGI only after reading it whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from messages_app.models import Message, ReplyRevision, Role, Room, Status
from messages_app.selectors import message_text, revision_payload, usage_of, with_text

ASSISTANT_NAME = "GPT"  # a reply with no assistant row (none since migration assistants)


def _page(room: Room, after: int, size: int) -> list[dict[str, Any]]:
    # Two queries a page however many rows: the messages, then their earlier
    # attempts (at most GPT_MAX_REVISIONS a reply).
    rows = (
        with_text(
            Message.objects.filter(room=room, id__gt=after).select_related("author", "assistant")
        )
        .prefetch_related(Prefetch("revisions", queryset=ReplyRevision.objects.order_by("number")))
        .order_by("id")[:size]
    )
    return [export_row(message) for message in rows]


def export_row(message: Message) -> dict[str, Any]:
    """One message as the export writes it: who, when, what, by which model."""
    author = message.author
    assistant = message.role == Role.ASSISTANT
    bot = message.assistant if message.assistant_id is not None else None
    bot_name = bot.name if bot is not None else ASSISTANT_NAME
    return {
        "id": message.pk,
        "role": message.role,
        "author": bot_name if assistant else (author.get_display_name() if author else None),
        "username": author.username if author is not None and not assistant else None,
        "assistant": bot_name if assistant else None,
        "model": message.model or None,
        "status": message.status,
        "body": message_text(message),
        "error": message.error if message.status == Status.FAILED else "",
        "reply_to": message.reply_to_id,
        "created_at": message.created_at.isoformat(),
        "finished_at": message.finished_at.isoformat() if message.finished_at else None,
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "usage": usage_of(message),
        # A regenerated reply's earlier attempts, oldest first (their text is gone
        # once the reply is deleted, as on the page).
        "revisions": [
            revision_payload(revision, deleted=message.deleted_at is not None)
            for revision in message.revisions.all()
        ]
        if assistant
        else [],
    }


async def rows(room: Room, page_size: int | None = None) -> AsyncIterator[dict[str, Any]]:
    """Every message of ``room``, oldest first, read ``page_size`` at a time."""
    size = page_size or settings.CHAT_EXPORT_PAGE_SIZE
    after = 0
    while True:
        page = await sync_to_async(_page)(room, after, size)
        for row in page:
            yield row
        if len(page) < size:
            return
        after = page[-1]["id"]


def _when(iso: str) -> str:
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def markdown_lines(row: dict[str, Any]) -> Iterator[str]:
    """One message in Markdown: a heading line with its author, time and model, then its
    text as written (it is Markdown already), then a rule."""
    who = row["author"] or "(deleted user)"
    head = [f"**{who}**"]
    if row["model"]:
        head.append(f"`{row['model']}`")
    head.append(_when(row["created_at"]))
    head.append(f"#{row['id']}")
    if row["reply_to"]:
        head.append(f"reply to #{row['reply_to']}")
    if row["status"] != Status.DONE:
        head.append(row["status"])
    if row.get("edited_at"):
        head.append("edited")
    yield " · ".join(head) + "\n\n"
    if row["body"]:
        yield row["body"].rstrip("\n") + "\n\n"
    if row["error"]:
        yield f"> Failed: {row['error']}\n\n"
    revisions = row.get("revisions") or []
    for revision in revisions:
        head = [f"Earlier attempt {revision['number']} of {len(revisions) + 1}"]
        if revision["model"]:
            head.append(f"`{revision['model']}`")
        if revision["status"] != Status.DONE:
            head.append(revision["status"])
        yield "> *" + " · ".join(head) + "*\n>\n"
        text = revision["body"] or (f"Failed: {revision['error']}" if revision["error"] else "")
        for line in text.rstrip("\n").split("\n") if text else []:
            yield f"> {line}".rstrip() + "\n"
        yield "\n"
    yield "---\n\n"


async def as_markdown(room: Room, page_size: int | None = None) -> AsyncIterator[str]:
    yield f"# {room.name}\n\n"
    yield f"Exported {timezone.now().strftime('%Y-%m-%d %H:%M UTC')} from /rooms/{room.slug}/.\n\n"
    yield "---\n\n"
    async for row in rows(room, page_size):
        for line in markdown_lines(row):
            yield line


async def as_json(room: Room, page_size: int | None = None) -> AsyncIterator[str]:
    head = {
        "room": {"name": room.name, "slug": room.slug, "granularity": room.granularity},
        "exported_at": timezone.now().isoformat(),
    }
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "messages": ['
    first = True
    async for row in rows(room, page_size):
        yield ("" if first else ",") + "\n" + json.dumps(row, ensure_ascii=False)
        first = False
    yield "\n]}\n"
