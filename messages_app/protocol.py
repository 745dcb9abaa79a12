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

# What the page shows for each close code (room.js mirrors these). 4401 and 4403
# end the page's session with the room: it stops reconnecting. 4408 is not an end:
# the page reconnects and takes a fresh snapshot, so nothing is lost.
CLOSE_REASONS = {
    CLOSE_UNAUTHENTICATED: "You were signed out",
    CLOSE_FORBIDDEN: "You were removed from this room",
    CLOSE_ROOM_NOT_FOUND: "This room no longer exists",
    CLOSE_TOO_SLOW: "Too slow: catching up",
    CLOSE_TOO_MANY_SOCKETS: "Too many open tabs",
}
# The close codes after which the page must not reconnect.
FINAL_CLOSE_CODES = frozenset({CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_ROOM_NOT_FOUND})

# --- frame types ----------------------------------------------------------------------

SERVER_FRAME_TYPES = frozenset(
    {
        "snapshot",
        "message",
        "delta",
        "error",
        "heartbeat",
        "members",
        "history",
        "presence",
        "typing",
    }
)
CLIENT_FRAME_TYPES = frozenset(
    {"post", "cancel", "delete", "retry", "history", "edit", "typing", "read"}
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
        "unknown_field",
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
        # regenerate (issue 13): a retry of a user message, past GPT_MAX_REVISIONS
        "not_a_reply",
        "too_many_revisions",
        # history and edits (issue 14)
        "invalid_history",
        "invalid_limit",
        "not_editable",
        # a room's assistant settings (issue 13)
        "instructions_too_long",
        "invalid_context_messages",
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


def snapshot_frame(messages: list[dict[str, Any]], *, has_more: bool = False) -> str:
    """Sent once on connect: the room's newest messages, oldest first.

    ``has_more``: the room has messages older than these (the page can ask ``history``).
    """
    return dumps({"type": "snapshot", "messages": messages, "has_more": has_more})


def history_frame(messages: list[dict[str, Any]], *, has_more: bool, has_newer: bool) -> str:
    """The answer to one socket's ``history`` frame: a page of the timeline, oldest first.

    ``has_more``: older messages than the first exist; ``has_newer``: newer than the last.
    """
    return dumps(
        {"type": "history", "messages": messages, "has_more": has_more, "has_newer": has_newer}
    )


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


def heartbeat_frame(open_rows: list[tuple[int, int]]) -> str:
    """Sent every ``CHAT_RECONCILE_SECONDS``: ``[id, version]`` of the room's open rows.

    A page that holds a row open that is not listed, or at a lower version than
    listed, has missed an event (docs/architecture.md, "Convergence"): it resyncs.
    """
    return dumps({"type": "heartbeat", "open": [[mid, version] for mid, version in open_rows]})


def presence_frame(users: list[dict[str, Any]], *, count: int) -> str:
    """Who is in the room now (each user once, by name, at most CHAT_PRESENCE_MAX_USERS),
    and how many they are (``count``, which may be more than listed)."""
    return dumps({"type": "presence", "users": users, "count": count})


def typing_frame(*, user_id: int, name: str) -> str:
    """``user_id`` is typing (to the room's sockets of other users only)."""
    return dumps({"type": "typing", "user_id": user_id, "name": name})


@dataclass(frozen=True)
class Event:
    """What the fan-out needs of a server frame published on a room's channel."""

    kind: str
    message_id: int | None
    version: int
    offset: int
    text: str  # a delta's appended text ("" for other frames)
    sender: int | None = None  # a typing frame's user: not sent to that user's sockets


def parse_event(data: str) -> Event:
    """A frame as ``messages_app.events`` published it; ``ValueError`` when malformed."""
    try:
        payload = json.loads(data)
        kind = payload["type"]
        if kind == "delta":
            return Event(
                "delta",
                int(payload["id"]),
                int(payload["version"]),
                int(payload["offset"]),
                str(payload["text"]),
            )
        if kind == "message":
            message = payload["message"]
            return Event("message", int(message["id"]), int(message["version"]), 0, "")
        if kind == "typing":
            return Event("typing", None, 0, 0, "", int(payload["user_id"]))
        return Event(str(kind), None, 0, 0, "")
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"malformed event: {error!r}") from None


# --- Redis: channels and commands between processes (not the WebSocket) -------------


def room_channel(prefix: str, room_id: int) -> str:
    """The channel of a room's events: each is a server frame's JSON text, as sent."""
    return f"{prefix}:room:{room_id}"


def command_channel(prefix: str) -> str:
    """The channel of commands to every web process's hub (``SocketsClose``)."""
    return f"{prefix}:sockets"


@dataclass(frozen=True)
class SocketsClose:
    """Close the sockets of ``user_id`` (of ``room_id`` only, when set) with ``code``."""

    user_id: int
    code: int
    room_id: int | None = None


def sockets_close_command(command: SocketsClose) -> str:
    if command.code not in CLOSE_CODES:
        raise ValueError(f"{command.code} is not one of protocol.CLOSE_CODES")
    return dumps(
        {
            "type": "sockets.close",
            "user_id": command.user_id,
            "code": command.code,
            "room_id": command.room_id,
        }
    )


def parse_command(data: str) -> SocketsClose:
    """A command from another web process; ``ValueError`` when malformed."""
    try:
        payload = json.loads(data)
        if payload["type"] != "sockets.close" or payload["code"] not in CLOSE_CODES:
            raise ValueError(f"unknown command {data[:80]!r}")
        room_id = payload.get("room_id")
        return SocketsClose(
            user_id=int(payload["user_id"]),
            code=int(payload["code"]),
            room_id=None if room_id is None else int(room_id),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"malformed command: {error!r}") from None


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


@dataclass(frozen=True)
class Retry:
    """Regenerate a finished, failed or cancelled reply (``services.reply_regenerate``)."""

    id: int


@dataclass(frozen=True)
class Typing:
    """The user is typing (room.js sends one every CHAT_TYPING_INTERVAL_SECONDS at most)."""


@dataclass(frozen=True)
class Read:
    """The user has seen the room up to message ``id`` (Membership.last_read_id)."""

    id: int


@dataclass(frozen=True)
class History:
    """A page of the timeline next to message ``id``: older than it (``before``),
    newer (``after``), or a window holding it (``around``). ``limit`` is checked
    against ``CHAT_HISTORY_MAX_LIMIT`` by ``selectors.room_history``."""

    anchor: str
    id: int
    limit: int | None


@dataclass(frozen=True)
class Edit:
    id: int
    body: Any  # checked and cleaned by services.message_edit, as a post's


ClientFrame = Post | Cancel | Delete | Retry | History | Edit | Typing | Read

HISTORY_ANCHORS = ("before", "after", "around")


def _only_fields(frame: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse fields a frame type does not have (its newer types are strict)."""
    extra = sorted(set(frame) - allowed)
    if extra:
        raise ClientError(
            "unknown_field", f"A {frame['type']} frame has no field {str(extra[0])[:40]!r}."
        )


def _message_id(frame: dict[str, Any]) -> int:
    value = frame.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientError("invalid_id", "id must be a message id (an integer).")
    return value


def _positive_id(frame: dict[str, Any], key: str) -> int:
    value = frame.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError("invalid_id", f"{key} must be a message id (a positive integer).")
    return value


def _history(frame: dict[str, Any]) -> History:
    anchors = [key for key in HISTORY_ANCHORS if key in frame]
    if len(anchors) != 1:
        raise ClientError(
            "invalid_history", 'A history frame needs one of "before", "after" or "around".'
        )
    limit = frame.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise ClientError("invalid_limit", "limit must be an integer.")
    return History(anchor=anchors[0], id=_positive_id(frame, anchors[0]), limit=limit)


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
    if kind == "retry":
        return Retry(id=_message_id(frame))
    if kind == "history":
        return _history(frame)
    if kind == "edit":
        message_id = _positive_id(frame, "id")
        if "body" not in frame:
            raise ClientError("missing_body", 'An edit needs a "body".')
        return Edit(id=message_id, body=frame["body"])
    if kind == "typing":
        _only_fields(frame, frozenset({"type"}))
        return Typing()
    if kind == "read":
        _only_fields(frame, frozenset({"type", "id"}))
        return Read(id=_message_id(frame))
    raise ClientError("unknown_type", f"Unknown frame type {str(kind)[:40]!r}.")


# --- the mirror ------------------------------------------------------------------------


def mirror() -> dict[str, Any]:
    """The vocabulary the browser mirrors: room.js's PROTOCOL block equals this
    (tests/messages_app/test_protocol_mirror.py), as does tests/protocol.py."""
    return {
        "close": {
            "unauthenticated": CLOSE_UNAUTHENTICATED,
            "forbidden": CLOSE_FORBIDDEN,
            "roomNotFound": CLOSE_ROOM_NOT_FOUND,
            "tooSlow": CLOSE_TOO_SLOW,
            "tooManySockets": CLOSE_TOO_MANY_SOCKETS,
        },
        "closeReasons": {str(code): text for code, text in sorted(CLOSE_REASONS.items())},
        "finalCloseCodes": sorted(FINAL_CLOSE_CODES),
        "errorCodes": sorted(ERROR_CODES),
        "serverFrames": sorted(SERVER_FRAME_TYPES),
        "clientFrames": sorted(CLIENT_FRAME_TYPES),
    }
