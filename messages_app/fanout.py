"""Room events to sockets: one Redis subscription per room per web process, and
the fan-out to that room's sockets in memory, in one pass per batch of events.

Why not the Channels layer: with it, every event costs, *per socket*, a msgpack
decode, a queue, a task wake-up, a thread hop (channels 4.2 closes old database
connections before every handler), an ASGI message through daphne and autobahn's
framing of the same text again. At 3 streams × 50 viewers × 50 tokens/s that
saturated daphne's one core (docs/benchmarks.md has the profile). Here an event
costs, per socket, a version check and one write of bytes framed once.

How a socket joins (the order is what makes it lossless, docs/architecture.md):
1. ``RoomHub.join`` adds the socket's ``Member`` and waits until Redis has
   *confirmed* the room's subscription: every event published from then on reaches
   this process.
2. The consumer reads its snapshot and sends it. Events that arrive meanwhile are
   held by the member (``pending``).
3. ``Member.start(versions)`` takes the snapshot's versions, then writes what was
   held and everything after, skipping what the snapshot already holds. A delta is
   written only above the version the socket has for that row, as before.

Coalescing: the events of one read from Redis are fanned out together, and
consecutive deltas of one reply in that batch (contiguous text, rising versions)
become one frame: their joined text, the first offset, the last version, as the
protocol allows. When the process keeps up, a batch is one event and nothing is
coalesced; when it falls behind, the work per socket shrinks instead of piling up.
The same merge applies to frames queued behind a socket whose writes wait (the
generic ASGI path).

Writes: under daphne, a frame is framed once (autobahn's ``PreparedMessage``, its
API for broadcasting) and its bytes go to each socket's transport, all of a
batch's frames for one socket in one write, straight to the socket when Twisted
has nothing queued for it (``write_now``). Under any other ASGI server (and in
tests) frames go through the ASGI ``send``, by one writer task per socket.

After Redis comes back from an outage, the hub subscribes again and sends each
socket the rows of its room that changed meanwhile, as ``message`` frames (the
full row, higher version): what was published during the outage is not lost.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings

from messages_app import protocol

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

SUBSCRIBE_TIMEOUT = 10.0
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


# --- frames -------------------------------------------------------------------


@dataclass(eq=False)
class Frame:
    """One frame for the room's sockets, with what the version check needs.

    ``parts`` are the (version, offset, text) of the deltas merged into it; a
    ``message`` frame (or any other) has none.
    """

    kind: str
    message_id: int | None
    first_version: int
    last_version: int
    text: str
    parts: list[tuple[int, int, str]] = field(default_factory=list)
    _payload: bytes | None = None
    _prepared: Any = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = self.text.encode()
        return self._payload

    def prepared(self, factory: Any) -> Any:
        """The frame as autobahn's ``PreparedMessage``: framed once for every socket."""
        if self._prepared is None:
            self._prepared = factory.prepareMessage(self.payload)
        return self._prepared

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


def parse_event(data: bytes) -> Frame:
    """A frame as published by ``messages_app.events`` (its JSON text, unchanged)."""
    text = data.decode()
    payload = json.loads(text)
    kind = payload.get("type")
    if kind == "delta":
        version = payload["version"]
        parts = [(version, payload["offset"], payload["text"])]
        return Frame("delta", payload["id"], version, version, text, parts, _payload=data)
    if kind == "message":
        message = payload["message"]
        version = message["version"]
        return Frame("message", message["id"], version, version, text, _payload=data)
    return Frame(kind or "", None, 0, 0, text, _payload=data)


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


# --- one socket -----------------------------------------------------------------


def daphne_protocol(send: Send) -> Any:
    """The autobahn protocol behind daphne's ASGI ``send``, or None (another server, a test).

    daphne passes ``functools.partial(server.handle_reply, protocol)`` as ``send``
    (daphne/server.py); the protocol's ``sendPreparedMessage`` is autobahn's API
    for sending one prepared frame to many sockets.
    """
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a dependency
        return None
    if (
        isinstance(send, functools.partial)
        and send.args
        and isinstance(send.args[0], WebSocketProtocol)
    ):
        return send.args[0]
    return None


def _plain_tcp(transport: Any) -> bool:
    """Whether ``write_now`` may write to this Twisted transport's socket itself."""
    try:
        from twisted.internet.tcp import Connection
    except ImportError:  # pragma: no cover - daphne depends on Twisted
        return False
    return (
        isinstance(transport, Connection)
        and not getattr(transport, "TLS", True)
        and hasattr(transport, "_tempDataLen")
        and hasattr(transport, "socket")
    )


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data`` on a plain TCP Twisted transport, now when nothing is queued.

    Twisted's ``write`` appends to its buffer and registers the socket for
    writability, and on the next loop turn sends and unregisters it: two
    ``epoll_ctl`` calls and a callback per write. With its buffer empty, the
    ``send`` it would make next is made here; whatever the socket does not take
    (or any error, which Twisted then handles and reports as usual) goes to
    ``transport.write`` behind it, so the byte order is Twisted's.
    """
    if (
        transport.dataBuffer
        or transport._tempDataLen
        or not transport.connected
        or transport.disconnecting
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


class Member:
    """One socket of a room, as the hub writes to it.

    Until ``start`` (the snapshot is sent) frames are held; from then on each is
    written if it is above the version the socket holds for its row.
    """

    def __init__(self, send: Send) -> None:
        self.send = send
        self.protocol = daphne_protocol(send)
        self.direct = False  # write_now to the socket (set once it is accepted)
        self.versions: dict[int, int] = {}
        self.pending: list[Frame] | None = []
        self.closed = False
        self._outbox: list[Frame] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def start(self, versions: dict[int, int]) -> None:
        """Called once the snapshot is sent: write what arrived meanwhile, then live."""
        self.versions.update(versions)
        held, self.pending = self.pending or [], None
        if self.protocol is None:
            self._writer = asyncio.create_task(self._write_loop())
        else:
            self.direct = _plain_tcp(self.protocol.transport)
        self.deliver(held)

    def close(self) -> None:
        self.closed = True
        self.pending = None
        if self._writer is not None:
            self._writer.cancel()

    def deliver(self, frames: Iterable[Frame]) -> None:
        """Write ``frames`` (in order) that this socket does not hold yet."""
        if self.closed:
            return
        if self.pending is not None:
            self.pending.extend(frames)
            return
        versions = self.versions
        out = []
        for frame in frames:
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
            self._write(out)

    def _write(self, frames: list[Frame]) -> None:
        protocol = self.protocol
        if protocol is None:
            self._outbox += frames
            self._wakeup.set()
            return
        if protocol.state != protocol.STATE_OPEN:
            return  # closing: the consumer's disconnect removes this member
        factory = protocol.factory
        if not self.direct or protocol._perMessageCompress is not None or protocol.send_queue:
            # compression negotiated, or autobahn has queued sends of its own
            for frame in frames:
                protocol.sendPreparedMessage(frame.prepared(factory))
            return
        data = b"".join(frame.prepared(factory).payloadHybi for frame in frames)
        write_now(protocol.transport, data)

    async def _write_loop(self) -> None:
        """The generic path: one ASGI send per frame, merging deltas that queued up."""
        while not self.closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            frames, self._outbox = coalesce(self._outbox), []
            for frame in frames:
                await self.send({"type": "websocket.send", "text": frame.text})


# --- Redis ------------------------------------------------------------------------


class _Incomplete(Exception):
    pass


def parse_resp(buffer: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 value of ``buffer`` at ``pos``, and where the next one starts."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[pos], buffer[pos + 1 : end]
    pos = end + 2
    if kind == 0x2A:  # * array
        items = []
        for _ in range(int(line)):
            item, pos = parse_resp(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 0x24:  # $ bulk string
        length = int(line)
        if length < 0:
            return None, pos
        if len(buffer) < pos + length + 2:
            raise _Incomplete
        return bytes(buffer[pos : pos + length]), pos + length + 2
    if kind == 0x3A:  # : integer
        return int(line), pos
    if kind == 0x2D:  # - error
        return RuntimeError(bytes(line).decode(errors="replace")), pos
    return bytes(line), pos  # + simple string


def resp_command(*args: str | bytes) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Subscriber(asyncio.Protocol):
    """A Redis connection in subscribe mode: hands every read, parsed, to the hub."""

    def __init__(self, hub: RoomHub) -> None:
        self.hub = hub
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        items, pos = [], 0
        try:
            while pos < len(self.buffer):
                item, pos = parse_resp(self.buffer, pos)
                items.append(item)
        except _Incomplete:
            pass
        del self.buffer[:pos]
        self.hub.received(items)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def command(self, *args: str | bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(resp_command(*args))


async def _open_redis(url: str, hub: RoomHub) -> _Subscriber:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    if parts.scheme == "unix":
        _, protocol = await loop.create_unix_connection(lambda: _Subscriber(hub), parts.path)
    else:
        _, protocol = await loop.create_connection(
            lambda: _Subscriber(hub),
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            ssl=ssl.create_default_context() if parts.scheme == "rediss" else None,
        )
    if parts.password:
        args = [unquote(parts.username), unquote(parts.password)] if parts.username else []
        protocol.command("AUTH", *(args or [unquote(parts.password)]))
    return protocol


# --- the hub ------------------------------------------------------------------------


class RoomHub:
    """This process's subscriptions to rooms, and their sockets (one per event loop)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = f"{prefix}:room:".encode()
        self.rooms: dict[int, set[Member]] = {}
        # per room: SUBSCRIBEs sent and not yet confirmed, and who waits for them
        self._unconfirmed: dict[int, int] = {}
        self._confirmed: dict[int, asyncio.Future[None]] = {}
        self._subscriber: _Subscriber | None = None
        self._runner: asyncio.Task[None] | None = None
        self._repairs: set[asyncio.Task[None]] = set()

    def channel(self, room_id: int) -> bytes:
        return self.prefix + str(room_id).encode()

    async def join(self, room_id: int, member: Member) -> None:
        """Add ``member`` to the room; return once Redis has confirmed the subscription."""
        members = self.rooms.setdefault(room_id, set())
        members.add(member)
        confirmed = self._confirmed.get(room_id)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmed[room_id] = confirmed
            self._subscribe(room_id)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except BaseException:
            await self.leave(room_id, member)
            raise

    async def leave(self, room_id: int, member: Member) -> None:
        member.close()
        members = self.rooms.get(room_id)
        if members is None:
            return
        members.discard(member)
        if members:
            return
        del self.rooms[room_id]
        confirmed = self._confirmed.pop(room_id, None)
        if confirmed is not None and not confirmed.done():
            confirmed.cancel()
        # _unconfirmed keeps counting: a SUBSCRIBE still in flight is acknowledged
        # later, and must not confirm a new one of the same room too early.
        if self._subscriber is not None:
            self._subscriber.command("UNSUBSCRIBE", self.channel(room_id))
            if not self.rooms and self._subscriber.transport is not None:
                self._subscriber.transport.close()  # idle: the runner ends

    def _subscribe(self, room_id: int) -> None:
        if self._subscriber is not None and self._subscriber.transport is not None:
            self._unconfirmed[room_id] = self._unconfirmed.get(room_id, 0) + 1
            self._subscriber.command("SUBSCRIBE", self.channel(room_id))

    async def _run(self) -> None:
        """Keep one subscribed connection while any room has sockets, reconnecting."""
        attempt = 0
        outage = False
        while self.rooms:
            try:
                self._subscriber = await _open_redis(self.url, self)
            except OSError as error:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                logger.warning("room events: cannot reach Redis (%s); retry in %.1fs", error, delay)
                attempt += 1
                outage = True
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._unconfirmed.clear()
            for room_id in list(self.rooms):
                self._confirmed.setdefault(room_id, asyncio.get_running_loop().create_future())
                self._subscribe(room_id)
            if outage:
                logger.warning("room events: Redis is back; resubscribed %s rooms", len(self.rooms))
                for room_id in list(self.rooms):
                    task = asyncio.create_task(self._repair(room_id))
                    self._repairs.add(task)
                    task.add_done_callback(self._repairs.discard)
            await self._subscriber.lost
            self._subscriber = None
            if self.rooms:
                outage = True
                logger.warning("room events: lost Redis; reconnecting")
                # Until Redis is back no event arrives: a new socket must wait.
                for room_id, future in list(self._confirmed.items()):
                    if future.done():
                        self._confirmed[room_id] = asyncio.get_running_loop().create_future()

    def received(self, items: list[Any]) -> None:
        """Fan out one read from Redis: per room, its events in order, coalesced."""
        batches: dict[int, list[Frame]] = {}
        prefix = self.prefix
        for item in items:
            if not isinstance(item, list) or len(item) != 3:
                if isinstance(item, RuntimeError):
                    logger.error("room events: Redis refused a command: %s", item)
                continue
            kind, channel, data = item
            if not isinstance(channel, bytes) or not channel.startswith(prefix):
                continue
            try:
                room_id = int(channel[len(prefix) :])
            except ValueError:
                continue
            if kind == b"message":
                try:
                    batches.setdefault(room_id, []).append(parse_event(data))
                except (ValueError, KeyError, TypeError):
                    logger.exception("room events: a malformed event on %r", channel)
            elif kind == b"subscribe":
                self._confirm(room_id)
        for room_id, frames in batches.items():
            self._fan_out(room_id, coalesce(frames))

    def _confirm(self, room_id: int) -> None:
        left = self._unconfirmed.get(room_id, 0) - 1
        if left > 0:
            self._unconfirmed[room_id] = left
            return
        self._unconfirmed.pop(room_id, None)
        confirmed = self._confirmed.get(room_id)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    def _fan_out(self, room_id: int, frames: list[Frame]) -> None:
        for member in list(self.rooms.get(room_id, ())):
            try:
                member.deliver(frames)
            except Exception:
                logger.exception("room events: a socket of room %s failed", room_id)
                member.close()

    async def _repair(self, room_id: int) -> None:
        """After an outage: send the room's rows as they are now (``message`` frames)."""
        from channels.db import database_sync_to_async

        from messages_app.events import message_event
        from messages_app.models import Room
        from messages_app.selectors import room_snapshot

        def rows() -> list[dict[str, Any]]:
            room = Room.objects.filter(pk=room_id).first()
            return room_snapshot(room=room) if room is not None else []

        try:
            payloads = await database_sync_to_async(rows)()
        except Exception:
            logger.exception("room events: could not read room %s after the outage", room_id)
            return
        frames = [
            Frame("message", p["id"], p["version"], p["version"], message_event(p)["frame"])
            for p in payloads
        ]
        self._fan_out(room_id, frames)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub] = weakref.WeakKeyDictionary()


def hub() -> RoomHub:
    """This event loop's hub (daphne has one loop; tests may have one per test)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = RoomHub(settings.REDIS_URL, settings.CHAT_REDIS_PREFIX)
        _hubs[loop] = found
    return found
