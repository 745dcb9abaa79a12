"""A test client of the room protocol (docs/architecture.md), applying frames as a browser must.

It keeps what a browser would hold per row, and records every rule the server
breaks: a delta that leaves a gap, a repeated or backwards version, a frame of
an unknown type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoomView:
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    # (id, version) of every change applied after the snapshot, in arrival order
    applied: list[tuple[int, int]] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    snapshots: int = 0
    snapshot_rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    # the latest member list (``members`` frames: someone joined, left, changed role)
    members: list[dict[str, Any]] | None = None

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
        elif kind == "error":
            self.errors.append(frame)
        elif kind == "members":
            self.members = frame["members"]
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
