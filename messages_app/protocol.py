"""The room WebSocket protocol: every frame, error code and close code, in one place.

docs/architecture.md ("The WebSocket protocol") describes it; the browser's
``room.js`` and the tests' ``tests/protocol.py`` mirror it. Frames are built and
parsed here and nowhere else on the server, in the manner of Zulip's
``zerver/lib/event_types.py``: one function per frame, one vocabulary per kind
of code.

Client frames are JSON text objects with a ``type``; ``parse_client_frame``
checks the envelope and each type's fields, and raises ``ClientError`` with a
stable code for anything else, so a consumer only dispatches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# --- close codes (4000-4999 are the application's; the page shows why) ------------

CLOSE_UNAUTHENTICATED = 4401  # not signed in, or the session ended (logout, password, ...)
CLOSE_FORBIDDEN = 4403  # no longer a member of this room (removed, left)
CLOSE_ROOM_NOT_FOUND = 4404  # no room has that slug, or it is not visible to this user
CLOSE_TOO_SLOW = 4408  # the socket fell too far behind (its buffer is full): reconnect
CLOSE_TOO_MANY_SOCKETS = 4429  # the user has too many sockets open

CLOSE_CODES = frozenset(
    {
        CLOSE_UNAUTHENTICATED,
        CLOSE_FORBIDDEN,
        CLOSE_ROOM_NOT_FOUND,
        CLOSE_TOO_SLOW,
        CLOSE_TOO_MANY_SOCKETS,
    }
)

# --- error codes (the ``code`` of an ``error`` frame) -------------------------------

ERROR_CODES = frozenset(
    {
        # the envelope
        "invalid_json",
        "invalid_frame",
        "missing_type",
        "unknown_type",
        "binary_frame",
        "frame_too_large",
        # post
        "missing_body",
        "invalid_body",
        "empty_body",
        "body_too_long",
        "invalid_client_id",
        # ids
        "invalid_id",
        "not_found",
        # state and rights
        "not_streaming",
        "forbidden",
        "rate_limited",
        "not_retryable",
        "server_error",
        # rooms (forms and the admin share the vocabulary)
        "invalid_name",
        "name_too_long",
        "invalid_slug",
        "slug_taken",
        "invalid_granularity",
        "invalid_visibility",
        # membership, invites, deletes (issue 9)
        "not_member",
        "invalid_role",
        "last_owner",
        "invalid_invite",
        "invite_expired",
        "already_member",
        "already_deleted",
        "client_id_reused",
        "invalid_text",
    }
)


class ClientError(Exception):
    """A request the caller got wrong; ``code`` is stable, ``detail`` is for people.

    ``retry_after`` (seconds), when set, tells the client how long to wait
    (``rate_limited``).
    """

    def __init__(self, code: str, detail: str, *, retry_after: float | None = None) -> None:
        assert code in ERROR_CODES, code  # noqa: S101 - one vocabulary: add new codes above
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


# --- server frames ------------------------------------------------------------------


def dumps(payload: dict[str, Any]) -> str:
    """A frame's JSON text: compact, UTF-8 as is (the wire carries text frames)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def snapshot_frame(messages: list[dict[str, Any]]) -> str:
    """Sent once on connect: the room's newest messages, oldest first."""
    return dumps({"type": "snapshot", "messages": messages})


def message_frame(message: dict[str, Any]) -> str:
    """A row inserted, or changed other than by an append: the full payload."""
    return dumps({"type": "message", "message": message})


def delta_frame(*, message_id: int, version: int, offset: int, text: str) -> str:
    """``text`` appended at ``offset`` (code points) by write ``version``."""
    return dumps(
        {"type": "delta", "id": message_id, "version": version, "offset": offset, "text": text}
    )


def members_frame(members: list[dict[str, Any]]) -> str:
    """The room's members changed (joined, left, removed, role): the whole list."""
    return dumps({"type": "members", "members": members})


def error_frame(code: str, detail: str, *, retry_after: float | None = None) -> str:
    """A refused client frame, and why. The socket stays open."""
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if retry_after is not None:
        frame["retry_after"] = round(retry_after, 1)
    return dumps(frame)


def error_frame_for(error: ClientError) -> str:
    return error_frame(error.code, error.detail, retry_after=error.retry_after)


# --- client frames -------------------------------------------------------------------

# A post frame carries at most CHAT_MAX_BODY_LENGTH characters, each up to 4 bytes
# and maybe JSON-escaped (6 bytes); anything larger is refused unread.
MAX_FRAME_OVERHEAD = 1024


def max_frame_length(max_body_length: int) -> int:
    return max_body_length * 6 + MAX_FRAME_OVERHEAD


@dataclass(frozen=True)
class Post:
    body: Any  # checked and cleaned by services.message_post (the same rules everywhere)
    client_id: Any


@dataclass(frozen=True)
class Cancel:
    id: int


@dataclass(frozen=True)
class Delete:
    id: int


ClientFrame = Post | Cancel | Delete


def _message_id(frame: dict[str, Any]) -> int:
    value = frame.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    return value


def parse_client_frame(text_data: str | None, *, max_length: int) -> ClientFrame:
    """One frame from the browser, checked; ``ClientError`` for anything else."""
    if text_data is None:
        raise ClientError("binary_frame", "Frames must be JSON text, not binary.")
    if len(text_data) > max_length:
        raise ClientError("frame_too_large", f"A frame is at most {max_length} characters.")
    try:
        frame = json.loads(text_data)
    except ValueError:
        raise ClientError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise ClientError("invalid_frame", "A frame must be a JSON object.")
    kind = frame.get("type")
    if kind is None:
        raise ClientError("missing_type", 'A frame needs a "type".')
    if kind == "post":
        if "body" not in frame:
            raise ClientError("missing_body", 'A post needs a "body".')
        return Post(body=frame["body"], client_id=frame.get("client_id"))
    if kind == "cancel":
        return Cancel(id=_message_id(frame))
    if kind == "delete":
        return Delete(id=_message_id(frame))
    raise ClientError("unknown_type", f"Unknown frame type {str(kind)[:40]!r}.")
