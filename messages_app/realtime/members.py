"""One socket of a room as the hub writes to it: versions, the hold, the byte bound.

How a socket joins (the order is what makes it lossless, docs/architecture.md):
1. ``RoomHub.join`` adds the socket's ``Member`` and waits until Redis has
   *confirmed* the room's subscription: every event published from then on
   reaches this process.
2. The consumer reads its snapshot and sends it. Events that arrive meanwhile are
   held by the member (``pending``).
3. ``Member.start(versions)`` takes the snapshot's versions, then writes what was
   held and everything after, skipping what the snapshot already holds. A delta
   is written only above the version the socket has for that row.

Bounded memory: after each write the member asks its writer how many bytes are
queued for the socket (in the outbox and, under daphne, in Twisted). Over
``CHAT_SOCKET_BUFFER_BYTES`` the member stops writing at once and asks its
consumer to close the socket with ``protocol.CLOSE_TOO_SLOW``; the page
reconnects and resyncs from a snapshot, so its user loses no text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from messages_app import protocol
from messages_app.realtime import daphne
from messages_app.realtime.frames import Frame, coalesce

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Writer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def write(self, frames: list[Frame]) -> None: ...

    def queued_bytes(self) -> int: ...


class AsgiWriter:
    """The generic path: one ASGI send per frame, merging deltas that queued up.

    ``probe``, when the server lets it be read (daphne.queue_probe), adds what the
    server itself holds for the socket: daphne's ``send`` returns before the bytes
    leave, so a slow socket's backlog is there, not in the outbox.
    """

    def __init__(self, send: Send, probe: Callable[[], int] | None = None) -> None:
        self.send = send
        self.probe = probe
        self._outbox: list[Frame] = []
        self._outbox_bytes = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._outbox, self._outbox_bytes = [], 0

    def write(self, frames: list[Frame]) -> None:
        self._outbox += frames
        self._outbox_bytes += sum(len(frame.payload) for frame in frames)
        self._wakeup.set()

    def queued_bytes(self) -> int:
        return self._outbox_bytes + (self.probe() if self.probe is not None else 0)

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            frames, self._outbox = coalesce(self._outbox), []
            for frame in frames:
                await self.send({"type": "websocket.send", "text": frame.text})
                self._outbox_bytes = max(0, self._outbox_bytes - len(frame.payload))
            self._outbox_bytes = sum(len(frame.payload) for frame in self._outbox)


def writer_for(send: Send, limit: int) -> Writer:
    """The fastest writer this server allows for a socket (daphne.py, else ASGI).

    Under daphne the kernel's send buffer of the socket is capped at ``limit`` too.
    """
    daphne.cap_kernel_buffer(send, limit)
    return daphne.fast_writer(send) or AsgiWriter(send, daphne.queue_probe(send))


class Member:
    """One socket of a room (``room_id``) of user ``user_id``, as the hub writes to it.

    Until ``start`` (the snapshot is sent) frames are held; from then on each is
    written if it is above the version the socket holds for its row. ``on_close``
    asks the socket's consumer to close it with a close code (a slow socket, a
    session that ended).
    """

    def __init__(
        self,
        writer: Writer,
        *,
        room_id: int,
        user_id: int | None,
        on_close: Callable[[int], None],
        limit: int,
    ) -> None:
        self.writer = writer
        self.room_id = room_id
        self.user_id = user_id
        self.on_close = on_close
        self.limit = limit
        self.versions: dict[int, int] = {}
        self.pending: list[Frame] | None = []
        self.pending_bytes = 0
        self.closed = False
        # this socket's entry in its room's presence (realtime/presence.py), once listed
        self.presence: str | None = None

    def start(self, versions: dict[int, int]) -> None:
        """Called once the snapshot is sent: write what arrived meanwhile, then live."""
        if self.closed:
            return
        self.versions.update(versions)
        held, self.pending = self.pending or [], None
        self.pending_bytes = 0
        self.writer.start()
        self.deliver(held)

    def close(self) -> None:
        """Stop writing (the socket left, or is being closed)."""
        if not self.closed:
            self.closed = True
            self.pending = None
            self.writer.stop()

    def end(self, code: int) -> None:
        """Stop writing and ask the consumer to close the socket with ``code``."""
        if self.closed:
            return
        self.close()
        self.on_close(code)

    def deliver(self, frames: Iterable[Frame]) -> None:
        """Write ``frames`` (in order) that this socket does not hold yet."""
        if self.closed:
            return
        if self.pending is not None:
            frames = list(frames)
            self.pending.extend(frames)
            self.pending_bytes += sum(len(frame.payload) for frame in frames)
            if self.pending_bytes > self.limit:
                self._too_slow(self.pending_bytes)
            return
        versions = self.versions
        out = []
        for frame in frames:
            if frame.sender is not None and frame.sender == self.user_id:
                continue  # "you are typing" is not news to you
            message_id = frame.message_id
            if message_id is not None:
                held = versions.get(message_id, 0)
                if frame.last_version <= held:
                    continue
                if frame.first_version <= held:
                    # merged writes of which the socket holds some (just after its snapshot)
                    partial = frame.after(held)
                    if partial is None:
                        continue
                    frame = partial
                versions[message_id] = frame.last_version
            out.append(frame)
        if out:
            self.writer.write(out)
            queued = self.writer.queued_bytes()
            if queued > self.limit:
                self._too_slow(queued)

    def _too_slow(self, queued: int) -> None:
        logger.warning(
            "room events: closing a socket of user %s in room %s as too slow "
            "(%s bytes queued > CHAT_SOCKET_BUFFER_BYTES=%s)",
            self.user_id,
            self.room_id,
            queued,
            self.limit,
        )
        self.end(protocol.CLOSE_TOO_SLOW)
