"""Rows as a reader sees them: a streaming reply's text is its body and its chunks."""

from __future__ import annotations

from messages_app.models import Message
from messages_app.selectors import message_text, with_text


def stored(pk: int) -> Message:
    """The message ``pk`` from the database, its ``body`` set to all its text so far
    (body and unfolded chunks, read in one statement, as a snapshot reads them)."""
    message = with_text(Message.objects.all()).get(pk=pk)
    message.body = message_text(message)
    return message
