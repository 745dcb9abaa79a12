"""A test client of the room protocol (docs/architecture.md), applying frames as a browser must.

It keeps what a browser would hold per row, and records every rule the server
breaks: a delta that leaves a gap, a repeated or backwards version, a frame of
an unknown type. Heartbeats are recorded (``heartbeats``); ``behind`` says which
rows a heartbeat shows the view to lack, as room.js judges it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The protocol's vocabulary, written out again on purpose: a test checks it equals
# messages_app.protocol.mirror(), as room.js's PROTOCOL block does.
MIRROR: dict[str, Any] = {
    "close": {
        "unauthenticated": 4401,
        "forbidden": 4403,
        "roomNotFound": 4404,
        "tooSlow": 4408,
        "tooManySockets": 4429,
    },
    "closeReasons": {
        "4401": "You were signed out",
        "4403": "You were removed from this room",
        "4404": "This room no longer exists",
        "4408": "Too slow: catching up",
        "4429": "Too many open tabs",
    },
    "finalCloseCodes": [4401, 4403, 4404],
    "errorCodes": [
        "already_deleted",
        "already_member",
        "binary_frame",
        "body_too_long",
        "client_id_reused",
        "empty_body",
        "forbidden",
        "frame_too_large",
        "instructions_too_long",
        "invalid_body",
        "invalid_client_id",
        "invalid_context_messages",
        "invalid_frame",
        "invalid_granularity",
        "invalid_history",
        "invalid_id",
        "invalid_invite",
        "invalid_json",
        "invalid_limit",
        "invalid_name",
        "invalid_role",
        "invalid_slug",
        "invalid_text",
        "invalid_visibility",
        "invite_expired",
        "last_owner",
        "missing_body",
        "missing_type",
        "name_too_long",
        "not_a_reply",
        "not_editable",
        "not_found",
        "not_member",
        "not_retryable",
        "not_streaming",
        "rate_limited",
        "server_error",
        "slug_taken",
        "too_many_revisions",
        "unknown_field",
        "unknown_type",
    ],
    "serverFrames": [
        "delta",
        "error",
        "heartbeat",
        "history",
        "members",
        "message",
        "presence",
        "snapshot",
        "typing",
    ],
    "clientFrames": ["cancel", "delete", "edit", "history", "post", "read", "retry", "typing"],
}


@dataclass
class RoomView:
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    # (id, version) of every change applied after the snapshot, in arrival order
    applied: list[tuple[int, int]] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    histories: list[dict[str, Any]] = field(default_factory=list)
    snapshots: int = 0
    snapshot_rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    # the latest member list (``members`` frames: someone joined, left, changed role)
    members: list[dict[str, Any]] | None = None
    # the latest ``presence`` frame (who is in the room now), and every ``typing`` frame
    presence: dict[str, Any] | None = None
    typing: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, raw: str) -> dict[str, Any]:
        frame = json.loads(raw)
        kind = frame["type"]
        if kind == "snapshot":
            self.snapshots += 1
            self.rows = {m["id"]: dict(m) for m in frame["messages"]}
            self.snapshot_rows = {m["id"]: dict(m) for m in frame["messages"]}
        elif kind == "message":
            message = frame["message"]
            held = self.rows.get(message["id"])
            if held is not None and message["version"] <= held["version"]:
                self.stale.append(frame)
            else:
                self.rows[message["id"]] = dict(message)
                self.applied.append((message["id"], message["version"]))
        elif kind == "delta":
            self.deltas.append(frame)
            held = self.rows.get(frame["id"])
            if held is None:
                self.gaps.append(frame)
            elif frame["version"] <= held["version"]:
                self.stale.append(frame)
            elif frame["offset"] != len(held["body"]):
                self.gaps.append(frame)
            else:
                held["body"] += frame["text"]
                held["version"] = frame["version"]
                self.applied.append((frame["id"], frame["version"]))
        elif kind == "history":
            # A page of older (or newer) rows: kept unless the view holds a newer version.
            self.histories.append(frame)
            for message in frame["messages"]:
                held = self.rows.get(message["id"])
                if held is None or message["version"] > held["version"]:
                    self.rows[message["id"]] = dict(message)
        elif kind == "error":
            self.errors.append(frame)
        elif kind == "members":
            self.members = frame["members"]
        elif kind == "heartbeat":
            self.heartbeats.append(frame)
        elif kind == "presence":
            self.presence = frame
        elif kind == "typing":
            self.typing.append(frame)
        else:
            raise AssertionError(f"unknown frame type {kind!r}")
        return frame

    def versions_of(self, message_id: int) -> list[int]:
        return [version for mid, version in self.applied if mid == message_id]

    def body(self, message_id: int) -> str:
        return self.rows[message_id]["body"]

    def status(self, message_id: int) -> str | None:
        row = self.rows.get(message_id)
        return row["status"] if row else None

    def reply_ids(self) -> list[int]:
        return [mid for mid, row in self.rows.items() if row["role"] == "assistant"]

    def behind(self, heartbeat: dict[str, Any]) -> set[int]:
        """Rows held open that ``heartbeat`` does not list, or lists at a higher version."""
        listed = {mid: version for mid, version in heartbeat["open"]}
        return {
            mid
            for mid, row in self.rows.items()
            if (mid not in listed and row["status"] in {"pending", "streaming"})
            or listed.get(mid, 0) > row["version"]
        }
