"""This process's rooms and their sockets: subscriptions, fan-out, repair, heartbeat.

One ``RoomHub`` per event loop (daphne has one). It subscribes to a room's channel
while the room has sockets here, and to the process-wide command channel
(``<prefix>:sockets``: ``events.user_sockets_close``) while it has any.

- Fan-out: each batch read from Redis is split per room, coalesced (frames.py)
  and delivered to each member (members.py): a version check and one write.
- Outage: when the subscription fails or goes silent (subscriber.py's health
  checks), the hub reconnects with backoff, resubscribes every room and sends
  each socket the rows of its room that changed meanwhile (``message`` frames).
- Heartbeat: every ``CHAT_RECONCILE_SECONDS`` each room's sockets get the
  versions of its open rows (one query for all rooms). It repairs what the
  subscription cannot see: an event lost between a worker and Redis while this
  process stayed subscribed (the page compares and resyncs, room.js).
- Commands: close a user's sockets (all, or of one room) with a close code.
- Presence (presence.py): a socket is listed once its snapshot is sent and
  unlisted when it leaves; the heartbeat's tick also renews the entries of this
  process's sockets, so those of a process that died expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable

import redis
from channels.db import database_sync_to_async
from django.conf import settings

from messages_app import protocol
from messages_app.realtime import reconcile
from messages_app.realtime.frames import Frame, coalesce, message_frame, parse_event, plain_frame
from messages_app.realtime.members import Member
from messages_app.realtime.presence import PresenceStore, entry_for
from messages_app.realtime.subscriber import Message, Subscriber

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 10.0
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
_MESSAGES = {"message", "smessage"}
_CONFIRMS = {"subscribe", "ssubscribe"}


class RoomHub:
    """This process's subscriptions to rooms, and their sockets (one per event loop)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        cluster: bool = False,
        health: float = 2.0,
        reconcile_every: float = 2.0,
        presence: PresenceStore | None = None,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self.health = health
        self.reconcile_every = reconcile_every
        self.presence = presence
        # per room: the last presence frame fanned out here (what its sockets hold)
        self.presence_seen: dict[int, str] = {}
        if presence is not None:
            presence.seen = self.presence_seen.get
        self.room_prefix = f"{prefix}:room:".encode()
        self.commands = protocol.command_channel(prefix).encode()
        self.rooms: dict[int, set[Member]] = {}
        self.users: dict[int, set[Member]] = {}
        # per channel: SUBSCRIBEs sent and not yet confirmed, and who waits for them
        self._unconfirmed: dict[bytes, int] = {}
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._subscriber: Subscriber | None = None
        self._runner: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def channel(self, room_id: int) -> bytes:
        return self.room_prefix + str(room_id).encode()

    # --- sockets ---------------------------------------------------------------------

    async def join(self, member: Member) -> None:
        """Add ``member`` to its room; return once Redis has confirmed the subscription.

        On any failure (timeout, cancellation) the member is removed again.
        """
        self.rooms.setdefault(member.room_id, set()).add(member)
        if member.user_id is not None:
            self.users.setdefault(member.user_id, set()).add(member)
        try:
            channel = self.channel(member.room_id)
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
                self._spawn(self._subscribe(channel))
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._run())
            if self._heartbeat is None or self._heartbeat.done():
                self._heartbeat = asyncio.create_task(self._heartbeats())
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except BaseException:
            await self.leave(member)
            raise

    async def leave(self, member: Member) -> None:
        """Remove ``member`` (idempotent); unsubscribe its room if it was the last."""
        self.discard(member)

    async def enter(self, member: Member, name: str) -> None:
        """List ``member`` (its snapshot sent) in its room's presence, for every process."""
        if self.presence is None or member.user_id is None or member.closed:
            return
        member.presence = entry_for(member.user_id, name)
        unchanged = await self.presence.enter(member.room_id, member.presence)
        if unchanged is not None:
            # the room's list is as its other sockets hold it: only this one needs it
            member.deliver([plain_frame(unchanged)])

    async def typing(
        self, member: Member, name: str, *, check: Callable[[], Awaitable[None]] | None = None
    ) -> bool:
        """Tell the room's other users' sockets that ``member``'s user types (throttled;
        ``check``, run once the throttle let it through, may refuse it)."""
        if self.presence is None or member.user_id is None:
            return False
        return await self.presence.typing(member.room_id, member.user_id, name, check=check)

    async def typing_ended(self, member: Member) -> None:
        """``member``'s user posted: the typing throttle starts again (their next
        "typing" passes at once; the others' pages cleared the line on the post)."""
        if self.presence is not None and member.user_id is not None:
            await self.presence.typing_ended(member.room_id, member.user_id)

    async def refresh_presence(self) -> None:
        """Renew the presence entries of this process's live sockets (one round trip)."""
        if self.presence is None:
            return
        rooms = {
            room_id: [m.presence for m in members if m.presence is not None and not m.closed]
            for room_id, members in self.rooms.items()
        }
        await self.presence.refresh({room_id: e for room_id, e in rooms.items() if e})

    def discard(self, member: Member) -> None:
        """``leave`` from sync code (the fan-out drops a member it closed)."""
        member.close()
        entry, member.presence = member.presence, None
        if entry is not None and self.presence is not None:
            # unlisted at once, also when the hub closes the socket itself (too
            # slow, session ended) before its consumer hears of the close
            self._spawn(self.presence.leave(member.room_id, entry))
        users = self.users.get(member.user_id) if member.user_id is not None else None
        if users is not None:
            users.discard(member)
            if not users:
                del self.users[member.user_id]  # type: ignore[arg-type]
        members = self.rooms.get(member.room_id)
        if members is None:
            return
        members.discard(member)
        if members:
            return
        del self.rooms[member.room_id]
        self.presence_seen.pop(member.room_id, None)
        channel = self.channel(member.room_id)
        confirmed = self._confirmed.pop(channel, None)
        if confirmed is not None and not confirmed.done():
            confirmed.cancel()
        # _unconfirmed keeps counting: a SUBSCRIBE still in flight is acknowledged
        # later, and must not confirm a new one of the same room too early.
        subscriber = self._subscriber
        if subscriber is not None:
            if self.rooms:
                self._spawn(self._quietly(subscriber.remove(channel)))
            elif self._runner is not None:
                self._runner.cancel()  # idle: drop the connection
                self._runner = None  # a join from now on starts a new one

    def close_user(self, command: protocol.SocketsClose) -> int:
        """Close the sockets of a user here (of one room, when named); how many."""
        closing = [
            member
            for member in self.users.get(command.user_id, ())
            if command.room_id is None or member.room_id == command.room_id
        ]
        for member in closing:
            member.end(command.code)
            self.discard(member)  # written no more, even before its disconnect
        return len(closing)

    # --- the subscription --------------------------------------------------------------

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, coroutine: object) -> None:
        with contextlib.suppress(redis.RedisError, OSError, RuntimeError):
            await coroutine  # type: ignore[misc]

    async def _subscribe(self, channel: bytes) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            return  # the runner subscribes every room once it is connected
        self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
        with contextlib.suppress(redis.RedisError, OSError, RuntimeError):
            await subscriber.add(channel)

    async def _run(self) -> None:
        """Keep a subscription while any room has sockets, reconnecting and repairing."""
        attempt = 0
        outage = False
        while self.rooms:
            subscriber = Subscriber(
                self.url, cluster=self.cluster, health=self.health, on_batch=self.received
            )
            try:
                await subscriber.connect()
                self._subscriber = subscriber
                self._unconfirmed.clear()
                loop = asyncio.get_running_loop()
                for channel in [self.commands, *map(self.channel, list(self.rooms))]:
                    if channel != self.commands:
                        self._confirmed.setdefault(channel, loop.create_future())
                    self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
                    await subscriber.add(channel)
                if outage:
                    logger.warning(
                        "room events: Redis is back; resubscribed %s rooms", len(self.rooms)
                    )
                    for room_id in list(self.rooms):
                        self._spawn(self.repair(room_id))
                attempt = 0
                outage = False
                await subscriber.run()
            except (redis.RedisError, OSError) as error:
                if not self.rooms:
                    break
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                logger.warning(
                    "room events: Redis subscription lost (%s); retry in %.1fs",
                    error or type(error).__name__,
                    delay,
                )
                attempt += 1
                outage = True
                self._reset_confirmations()
                await asyncio.sleep(delay)
            finally:
                if self._subscriber is subscriber:
                    self._subscriber = None
                await subscriber.close()

    def _reset_confirmations(self) -> None:
        # Until Redis is back no event arrives: a new socket must wait.
        loop = asyncio.get_running_loop()
        for channel, future in list(self._confirmed.items()):
            if future.done():
                self._confirmed[channel] = loop.create_future()

    def received(self, messages: list[Message]) -> None:
        """Fan out one read from Redis: per room, its events in order, coalesced."""
        batches: dict[int, list[Frame]] = {}
        prefix = self.room_prefix
        for message in messages:
            kind, channel = message.get("type"), message.get("channel")
            if not isinstance(channel, bytes):
                continue
            if channel == self.commands:
                if kind in _MESSAGES:
                    self._command(message["data"])
                continue
            if not channel.startswith(prefix):
                continue
            try:
                room_id = int(channel[len(prefix) :])
            except ValueError:
                continue
            if kind in _MESSAGES:
                try:
                    batches.setdefault(room_id, []).append(parse_event(message["data"]))
                except (ValueError, UnicodeDecodeError):
                    logger.exception("room events: a malformed event on %r", channel)
            elif kind in _CONFIRMS:
                self._confirm(channel)
        for room_id, frames in batches.items():
            self.fan_out(room_id, coalesce(frames))

    def _command(self, data: bytes) -> None:
        try:
            command = protocol.parse_command(data.decode())
        except (ValueError, UnicodeDecodeError):
            logger.exception("room events: a malformed command %r", data[:200])
            return
        self.close_user(command)

    def _confirm(self, channel: bytes) -> None:
        left = self._unconfirmed.get(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        confirmed = self._confirmed.get(channel)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    def fan_out(self, room_id: int, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.kind == "presence" and room_id in self.rooms:
                self.presence_seen[room_id] = frame.text
        for member in list(self.rooms.get(room_id, ())):
            try:
                member.deliver(frames)
            except Exception:
                logger.exception("room events: a socket of room %s failed", room_id)
                member.end(protocol.CLOSE_TOO_SLOW)  # the page reconnects and resyncs
            if member.closed:
                self.discard(member)

    # --- convergence ---------------------------------------------------------------

    async def repair(self, room_id: int) -> None:
        """After an outage: send the room's rows as they are now (``message`` frames)."""
        try:
            payloads = await database_sync_to_async(reconcile.room_rows)(room_id)
        except Exception:
            logger.exception("room events: could not read room %s after the outage", room_id)
            return
        self.fan_out(room_id, [message_frame(payload) for payload in payloads])

    async def heartbeat(self) -> None:
        """Send every room's sockets the versions of its open rows (one query)."""
        room_ids = list(self.rooms)
        if not room_ids:
            return
        rows = await database_sync_to_async(reconcile.open_rows)(room_ids)
        for room_id, open_rows in rows.items():
            self.fan_out(room_id, [plain_frame(protocol.heartbeat_frame(open_rows))])

    async def _heartbeats(self) -> None:
        while self.rooms:
            await asyncio.sleep(self.reconcile_every)
            try:
                await self.heartbeat()
            except Exception:
                logger.exception(
                    "room events: the heartbeat failed; next one in %.1fs", self.reconcile_every
                )
            try:
                await self.refresh_presence()
            except Exception:
                logger.exception("room events: the presence refresh failed")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub] = weakref.WeakKeyDictionary()


def hub() -> RoomHub:
    """This event loop's hub (daphne has one loop; tests may have one per test)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = RoomHub(
            settings.CHAT_EVENTS_REDIS_URL,
            settings.CHAT_REDIS_PREFIX,
            cluster=settings.CHAT_EVENTS_REDIS_CLUSTER,
            health=settings.CHAT_REDIS_HEALTH_CHECK_SECONDS,
            reconcile_every=settings.CHAT_RECONCILE_SECONDS,
            presence=PresenceStore(
                settings.CHAT_EVENTS_REDIS_URL,
                settings.CHAT_REDIS_PREFIX,
                cluster=settings.CHAT_EVENTS_REDIS_CLUSTER,
                ttl=settings.CHAT_PRESENCE_TTL_SECONDS,
                max_users=settings.CHAT_PRESENCE_MAX_USERS,
                typing_interval=settings.CHAT_TYPING_INTERVAL_SECONDS,
                coalesce=settings.CHAT_PRESENCE_COALESCE_SECONDS,
            ),
        )
        _hubs[loop] = found
    return found
