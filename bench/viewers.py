"""Viewer processes: many WebSocket clients per process, each applying frames as a
browser must (docs/architecture.md, "The WebSocket protocol") and recording when each delta
arrived.

A viewer process is driven by the coordinator over a pipe: ``connect`` opens
sockets (each waits for its snapshot), ``mark`` starts a round (byte counters),
``collect`` waits until every socket holds the expected replies in a final status
and returns what each socket saw, ``close`` closes them all.

Receive times are ``time.time()`` taken as the frame is handed to the client,
before it is parsed: every process of the machine shares that clock with the
model server, which logs when it emitted each token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

FINAL = frozenset({"done", "failed", "cancelled"})
# struct tcp_info (linux/tcp.h): __u64 tcpi_bytes_received sits at byte 128.
TCP_INFO_BYTES_RECEIVED = 128


def digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def tcp_bytes_received(ws: ClientConnection) -> int:
    """Bytes this socket has received from the kernel's view (headers of TCP excluded)."""
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return 0
    if len(info) < TCP_INFO_BYTES_RECEIVED + 8:
        return 0
    return struct.unpack_from("Q", info, TCP_INFO_BYTES_RECEIVED)[0]


@dataclass
class Row:
    version: int
    body: str
    status: str
    # the text as built from deltas alone, from the first sight of the row
    delta_text: str
    deltas: list[tuple[float, int, int, int]] = field(default_factory=list)
    first_seen: float = 0.0
    seen_versions: set[int] = field(default_factory=set)


class Viewer:
    """One socket: holds the rows as a browser would and counts protocol breaches."""

    def __init__(self, sid: int, room: str, ws: ClientConnection) -> None:
        self.sid = sid
        self.room = room
        self.ws = ws
        self.rows: dict[int, Row] = {}
        self.gaps = 0
        self.duplicates = 0
        self.reordered = 0
        self.errors = 0
        self.frames = 0
        self.payload_bytes = 0
        self.wire_at_mark = 0
        self.changed = asyncio.Event()
        self.closed_early = False

    def snapshot(self, raw: str) -> None:
        frame = json.loads(raw)
        if frame.get("type") != "snapshot":
            raise RuntimeError(f"expected a snapshot, got {raw[:200]}")
        now = time.time()
        for message in frame["messages"]:
            self.rows[message["id"]] = Row(
                message["version"], message["body"], message["status"], message["body"]
            )
            self.rows[message["id"]].first_seen = now

    def mark(self) -> None:
        self.rows.clear()
        self.frames = self.payload_bytes = 0
        self.gaps = self.duplicates = self.reordered = self.errors = 0
        self.wire_at_mark = tcp_bytes_received(self.ws)

    def apply(self, raw: str, now: float) -> None:
        self.frames += 1
        self.payload_bytes += len(raw.encode())
        frame = json.loads(raw)
        kind = frame["type"]
        if kind == "delta":
            row = self.rows.get(frame["id"])
            version, offset, text = frame["version"], frame["offset"], frame["text"]
            if row is None:
                self.gaps += 1  # a delta for a row this socket never got
                return
            if version <= row.version:
                if version in row.seen_versions:
                    self.duplicates += 1
                else:
                    self.reordered += 1
                return
            if offset != len(row.body):
                self.gaps += 1
                return
            row.body += text
            row.delta_text += text
            row.version = version
            row.seen_versions.add(version)
            row.deltas.append((now, offset, len(text), version))
        elif kind == "message":
            message = frame["message"]
            row = self.rows.get(message["id"])
            if row is None:
                row = Row(message["version"], message["body"], message["status"], message["body"])
                row.first_seen = now
                self.rows[message["id"]] = row
            elif message["version"] > row.version:
                row.version = message["version"]
                row.body = message["body"]
                row.status = message["status"]
            else:
                self.reordered += 1
            row.seen_versions.add(message["version"])
            self.changed.set()
        elif kind == "error":
            self.errors += 1
        elif kind != "snapshot":
            self.errors += 1

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                self.apply(raw, time.time())  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a broken socket is reported, not raised
            self.closed_early = True
        self.changed.set()

    def holds_final(self, reply_ids: list[int]) -> bool:
        return all(
            (row := self.rows.get(reply_id)) is not None and row.status in FINAL
            for reply_id in reply_ids
        )

    def result(self, reply_ids: list[int]) -> dict[str, Any]:
        replies = {}
        for reply_id in reply_ids:
            row = self.rows.get(reply_id)
            if row is None:
                replies[reply_id] = None
                continue
            replies[reply_id] = {
                "deltas": row.deltas,
                "delta_text_sha1": digest(row.delta_text),
                "delta_text_len": len(row.delta_text),
                "body_sha1": digest(row.body),
                "status": row.status,
                "version": row.version,
                "first_seen": row.first_seen,
            }
        return {
            "sid": self.sid,
            "room": self.room,
            "replies": replies,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "errors": self.errors,
            "frames": self.frames,
            "payload_bytes": self.payload_bytes,
            "wire_bytes": tcp_bytes_received(self.ws) - self.wire_at_mark,
            "closed_early": self.closed_early,
        }


class ViewerProcess:
    def __init__(self) -> None:
        self.viewers: list[Viewer] = []
        self.readers: list[asyncio.Task[None]] = []

    async def connect(self, sockets: list[dict[str, Any]], compression: bool) -> dict[str, Any]:
        errors: list[str] = []
        limit = asyncio.Semaphore(16)
        before = len(self.viewers)

        async def open_one(spec: dict[str, Any]) -> None:
            async with limit:
                try:
                    ws = await connect(
                        spec["url"],
                        additional_headers=spec.get("headers") or {},
                        compression="deflate" if compression else None,
                        max_size=None,
                        ping_interval=None,
                        open_timeout=120,
                        close_timeout=5,
                    )
                    viewer = Viewer(spec["sid"], spec["room"], ws)
                    viewer.snapshot(await asyncio.wait_for(ws.recv(), 120))  # type: ignore[arg-type]
                except Exception as error:  # noqa: BLE001 - reported to the coordinator
                    errors.append(f"{spec['url']}: {type(error).__name__}: {error}")
                    return
                self.viewers.append(viewer)

        await asyncio.gather(*(open_one(spec) for spec in sockets))
        for viewer in self.viewers[len(self.readers) :]:
            self.readers.append(asyncio.create_task(viewer.read()))
        return {"connected": len(self.viewers) - before, "errors": errors[:10]}

    def mark(self) -> dict[str, Any]:
        for viewer in self.viewers:
            viewer.mark()
        return {"ok": True}

    async def collect(self, expect: dict[str, list[int]], limit: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit

        async def until_final(viewer: Viewer) -> None:
            reply_ids = expect.get(viewer.room, [])
            while not viewer.holds_final(reply_ids) and not viewer.closed_early:
                viewer.changed.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(viewer.changed.wait(), remaining)

        watching = [viewer for viewer in self.viewers if viewer.room in expect]
        await asyncio.gather(*(until_final(viewer) for viewer in watching))
        return {"sockets": [viewer.result(expect[viewer.room]) for viewer in watching]}

    async def close(self) -> dict[str, Any]:
        await asyncio.gather(
            *(viewer.ws.close() for viewer in self.viewers), return_exceptions=True
        )
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.viewers, self.readers = [], []
        return {"ok": True}

    async def serve(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            kind = command["cmd"]
            if kind == "connect":
                reply = await self.connect(command["sockets"], command.get("compression", False))
            elif kind == "mark":
                reply = self.mark()
            elif kind == "collect":
                reply = await self.collect(command["expect"], command["timeout"])
            elif kind == "close":
                reply = await self.close()
            elif kind == "exit":
                await self.close()
                conn.send({"ok": True})
                return
            else:
                reply = {"error": f"unknown command {kind!r}"}
            conn.send(reply)


def main(conn: Connection) -> None:
    """The entry point of a viewer process."""
    asyncio.run(ViewerProcess().serve(conn))
