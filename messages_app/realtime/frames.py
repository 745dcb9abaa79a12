"""Frames as the fan-out handles them: what a version check needs, and coalescing.

Coalescing: the events of one read from Redis are fanned out together, and
consecutive deltas of one reply in that batch (contiguous text, rising versions)
become one frame: their joined text, the first offset, the last version, as the
protocol allows (docs/architecture.md). When the process keeps up, a batch is one
event and nothing is coalesced; when it falls behind, the work per socket shrinks
instead of piling up. The same merge applies to frames queued behind a socket
whose writes wait (``members.AsgiWriter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from messages_app import protocol


@dataclass(eq=False)
class Frame:
    """One frame for the room's sockets, with what the version check needs.

    ``parts`` are the (version, offset, text) of the deltas merged into it; a
    ``message`` frame (or any other) has none. ``cache`` holds what one ASGI
    server's writer derives from the frame once for every socket (daphne.py).
    """

    kind: str
    message_id: int | None
    first_version: int
    last_version: int
    text: str
    parts: list[tuple[int, int, str]] = field(default_factory=list)
    _payload: bytes | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    # a frame about this user (typing) that their own sockets do not get
    sender: int | None = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = self.text.encode()
        return self._payload

    def after(self, version: int) -> Frame | None:
        """The part of this merged delta above ``version`` (for a socket that holds some)."""
        assert self.message_id is not None  # noqa: S101 - only deltas have parts
        rest = [part for part in self.parts if part[0] > version]
        return delta_frame(self.message_id, rest) if rest else None


def delta_frame(message_id: int, parts: list[tuple[int, int, str]]) -> Frame:
    """One delta frame for consecutive writes ``parts`` (version, offset, text) of a reply."""
    if len(parts) == 1:
        version, offset, text = parts[0]
    else:
        version, offset = parts[-1][0], parts[0][1]
        text = "".join(part[2] for part in parts)
    frame = protocol.delta_frame(message_id=message_id, version=version, offset=offset, text=text)
    return Frame("delta", message_id, parts[0][0], version, frame, list(parts))


def message_frame(payload: dict[str, Any]) -> Frame:
    """A ``message`` frame of a row (the full payload), e.g. to repair a socket."""
    version = payload["version"]
    return Frame("message", payload["id"], version, version, protocol.message_frame(payload))


def plain_frame(text: str) -> Frame:
    """A frame every socket gets as it is (a heartbeat): no version check."""
    return Frame("", None, 0, 0, text)


def parse_event(data: bytes) -> Frame:
    """A frame as published by ``messages_app.events`` (its JSON text, unchanged)."""
    text = data.decode()
    event = protocol.parse_event(text)
    if event.kind == "delta" and event.message_id is not None:
        parts = [(event.version, event.offset, event.text)]
        return Frame("delta", event.message_id, event.version, event.version, text, parts, data)
    return Frame(
        event.kind,
        event.message_id,
        event.version,
        event.version,
        text,
        [],
        data,
        sender=event.sender,
    )


def coalesce(frames: list[Frame]) -> list[Frame]:
    """Merge each run of consecutive deltas of one reply whose texts follow each other."""
    if len(frames) < 2:
        return frames
    out: list[Frame] = []
    run: list[Frame] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            message_id = run[0].message_id
            assert message_id is not None  # noqa: S101 - deltas name their row
            out.append(delta_frame(message_id, [part for frame in run for part in frame.parts]))
        run.clear()

    for frame in frames:
        if frame.kind == "delta" and run:
            last_version, last_offset, last_text = run[-1].parts[-1]
            first_version, first_offset, _ = frame.parts[0]
            if (
                frame.message_id == run[-1].message_id
                and first_version > last_version
                and first_offset == last_offset + len(last_text)
            ):
                run.append(frame)
                continue
        close_run()
        if frame.kind == "delta":
            run.append(frame)
        else:
            out.append(frame)
    close_run()
    return out
