"""What every service module shares: text cleaning and the row's broadcast."""

from __future__ import annotations

import unicodedata
from typing import Any

from django.conf import settings
from django.db import transaction

from messages_app import events
from messages_app.models import Message
from messages_app.protocol import ClientError
from messages_app.selectors import message_payload

_CONTROL_CHARS = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f"}


def clean_text(text: str) -> str:
    """Text as it can be stored: NUL and other control characters dropped.

    Postgres refuses NUL in text; the others are invisible and only confuse.
    Newlines and tabs stay; CRLF becomes LF.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if any(ch in _CONTROL_CHARS for ch in text):
        text = "".join(ch for ch in text if ch not in _CONTROL_CHARS)
    return text


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds half of a UTF-16 pair (JSON's "\\ud800" alone).

    Such a string cannot be encoded as UTF-8, so Postgres can never store it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(text: str, *, code: str, what: str) -> None:
    if has_lone_surrogate(text):
        raise ClientError(
            code, f"{what} holds a broken character (a lone UTF-16 surrogate); remove it."
        )


def _clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ClientError("invalid_body", "The message body must be a string.")
    _check_text(body, code="invalid_text", what="The message")
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
