"""Who is in a room now, across every web process, and who is typing (issue 14).

Presence lives in Redis, one sorted set per room (``<prefix>:presence:<room id>``):
a member per open socket (``[user id, socket id, name]`` as JSON), its score the
time (Redis's clock) at which it expires. A socket enters when its snapshot is
sent and leaves when it closes (a change that leaves the room's list as its
sockets last heard it, such as a second tab, is not published: the entering
socket alone gets the list); each web process's hub refreshes its own live
sockets on its reconcile tick (``CHAT_RECONCILE_SECONDS``), so the sockets of a
process that died expire after ``CHAT_PRESENCE_TTL_SECONDS``. Every change (a
socket in or out, entries found expired) publishes the room's whole list as a
``presence`` frame on the room's channel, so every web process fans it out; a
user with two tabs is listed once. The list is cut at ``CHAT_PRESENCE_MAX_USERS``
(members per room are not bounded); the frame's ``count`` says how many there are.

Typing: one frame per user per room per ``CHAT_TYPING_INTERVAL_SECONDS`` is
published (``SET NX PX`` decides, across processes); a faster one is dropped
silently (the page throttles itself to the same interval, so only a client that
does not is dropped, and a lost "is typing" costs nothing). Nothing of either is
stored in Postgres.

Everything here is best effort: without Redis, nothing reaches a browser anyway,
so a failure is logged and the socket carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster

from messages_app import protocol

logger = logging.getLogger(__name__)

# KEYS[1]: the room's set. ARGV[1]: TTL seconds; ARGV[2]: "add" or "remove";
# ARGV[3..]: entries. Drops expired entries, adds (or renews) or removes the
# entries, and returns {how many entries came or went, the live entries}.
# The score is Redis's own clock, the same for every web process.
_UPDATE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local changed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 3, #ARGV do
  if ARGV[2] == 'remove' then
    changed = changed + redis.call('ZREM', KEYS[1], ARGV[i])
  else
    changed = changed + redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
end
return {changed, redis.call('ZRANGE', KEYS[1], 0, -1)}
"""


def presence_key(prefix: str, room_id: int) -> str:
    return f"{prefix}:presence:{room_id}"


def typing_key(prefix: str, room_id: int, user_id: int) -> str:
    return f"{prefix}:typing:{room_id}:{user_id}"


def entry_for(user_id: int, name: str) -> str:
    """A new socket's entry in its room's set (unique per socket)."""
    return json.dumps([user_id, uuid.uuid4().hex, name], ensure_ascii=False)


def users_of(entries: Iterable[bytes | str], limit: int) -> tuple[list[dict[str, Any]], int]:
    """The distinct users of ``entries``, by name (at most ``limit``), and how many."""
    users: dict[int, str] = {}
    for raw in entries:
        try:
            user_id, _socket, name = json.loads(raw)
            users[int(user_id)] = str(name)
        except (ValueError, TypeError):
            logger.warning("presence: a malformed entry %r", raw[:100])
    ordered = sorted(users.items(), key=lambda item: (item[1].casefold(), item[0]))
    return [{"user_id": uid, "name": name} for uid, name in ordered[:limit]], len(users)


class PresenceStore:
    """Presence and typing of one web process's rooms, on ``redis.asyncio``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        cluster: bool = False,
        ttl: float = 30.0,
        max_users: int = 50,
        typing_interval: float = 3.0,
        coalesce: float = 1.0,
    ) -> None:
        self.prefix = prefix
        self.coalesce = coalesce
        self.cluster = cluster
        self.ttl = ttl
        self.max_users = max_users
        self.typing_interval = typing_interval
        self.client: Any = (
            aiocluster.RedisCluster.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            if cluster
            else aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        )
        self._update = self.client.register_script(_UPDATE_LUA)
        # The last presence frame the room's sockets got (the hub's record of its
        # channel): a change that leaves the list as it was (a second tab) is not
        # published again to every socket of the room.
        self.seen: Callable[[int], str | None] | None = None
        # Per room: when this process last published its list, and the publish
        # waiting for the end of that window (CHAT_PRESENCE_COALESCE_SECONDS).
        # Oldest first: only rooms whose window is still open are kept.
        self._published_at: OrderedDict[int, float] = OrderedDict()
        self._deferred: dict[int, asyncio.Task[None]] = {}

    async def close(self) -> None:
        for task in list(self._deferred.values()):
            task.cancel()
        self._deferred.clear()
        await self.client.aclose()

    async def _publish(self, room_id: int, frame: str) -> None:
        channel = protocol.room_channel(self.prefix, room_id)
        if self.cluster:
            await self.client.spublish(channel, frame)
        else:
            await self.client.publish(channel, frame)

    async def _change(self, room_id: int, mode: str, entries: list[str]) -> tuple[int, list[Any]]:
        changed, live = await self._update(
            keys=[presence_key(self.prefix, room_id)], args=[self.ttl, mode, *entries]
        )
        return int(changed), live

    def _frame(self, live: list[Any]) -> str:
        users, count = users_of(live, self.max_users)
        return protocol.presence_frame(users, count=count)

    def _heard(self, room_id: int, frame: str) -> bool:
        """Whether ``frame`` is the list the room's sockets last got (``seen``)."""
        return self.seen is not None and self.seen(room_id) == frame

    async def _announce(self, room_id: int, live: list[Any]) -> str | None:
        """Publish the room's list, unless it is the one the room's sockets hold already
        (the last seen on the channel, ``seen``); the frame when it was not published."""
        frame = self._frame(live)
        if self._heard(room_id, frame):
            return frame
        # Each change publishes the whole list to every socket of the room, so
        # sockets joining at once (a web process restarted, its sockets back)
        # would cost the square of their number: within a window this process
        # publishes once, then once more at its end with the list as it is then.
        wait = self._published_at.get(room_id, -self.coalesce) + self.coalesce - time.monotonic()
        if wait > 0:
            if room_id not in self._deferred:
                self._deferred[room_id] = asyncio.create_task(self._publish_later(room_id, wait))
            return frame  # the entering socket gets it at once; the room at the window's end
        self._mark_published(room_id)
        await self._publish(room_id, frame)
        return None

    def _mark_published(self, room_id: int) -> None:
        now = time.monotonic()
        self._published_at.pop(room_id, None)
        self._published_at[room_id] = now
        # A room whose window has ended needs no entry (no entry: no wait).
        while next(iter(self._published_at.values())) < now - self.coalesce:
            self._published_at.popitem(last=False)

    async def _publish_later(self, room_id: int, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            # Gone from the waiting list before the list is read: a change from now
            # on waits for a window of its own, so none is missed.
            self._deferred.pop(room_id, None)
            self._mark_published(room_id)
            _, live = await self._change(room_id, "add", [])
            frame = self._frame(live)
            if not self._heard(room_id, frame):
                await self._publish(room_id, frame)
        except (redis.RedisError, OSError):
            logger.warning("presence: could not announce room %s", room_id, exc_info=True)
        finally:
            if self._deferred.get(room_id) is asyncio.current_task():
                del self._deferred[room_id]

    async def enter(self, room_id: int, entry: str) -> str | None:
        """A socket's snapshot was sent: list it, and tell the room if that changed its
        list. The list when it did not (the entering socket alone must get it)."""
        try:
            _, live = await self._change(room_id, "add", [entry])
            return await self._announce(room_id, live)
        except (redis.RedisError, OSError):
            logger.warning("presence: could not enter room %s", room_id, exc_info=True)
            return None

    async def leave(self, room_id: int, entry: str) -> None:
        """A socket closed: unlist it, and tell the room if that changed its list."""
        try:
            changed, live = await self._change(room_id, "remove", [entry])
            if changed:
                await self._announce(room_id, live)
        except (redis.RedisError, OSError):
            logger.warning("presence: could not leave room %s (it expires)", room_id, exc_info=True)

    async def refresh(self, rooms: dict[int, list[str]]) -> None:
        """Renew this process's live entries (the reconcile tick); tell a room whose
        list changed meanwhile (another process's sockets expired, say).

        One round trip for every room (a pipeline of one script per room); on a
        cluster, one per room (each room's set lives on its own shard).
        """
        try:
            results = await self._refresh_all(rooms)
        except (redis.RedisError, OSError):
            logger.warning("presence: could not refresh %s rooms", len(rooms), exc_info=True)
            return
        for room_id, (changed, live) in results.items():
            if not changed:
                continue
            try:
                await self._announce(room_id, live)
            except (redis.RedisError, OSError):
                logger.warning("presence: could not announce room %s", room_id, exc_info=True)

    async def _refresh_all(self, rooms: dict[int, list[str]]) -> dict[int, tuple[int, list[Any]]]:
        if self.cluster:
            return {room_id: await self._change(room_id, "add", e) for room_id, e in rooms.items()}
        pipe = self.client.pipeline(transaction=False)
        for room_id, entries in rooms.items():
            await self._update(
                keys=[presence_key(self.prefix, room_id)],
                args=[self.ttl, "add", *entries],
                client=pipe,
            )
        replies = await pipe.execute() if rooms else []
        return {
            room_id: (int(changed), live)
            for room_id, (changed, live) in zip(rooms, replies, strict=True)
        }

    async def users(self, room_id: int) -> tuple[list[dict[str, Any]], int]:
        """Who is in the room now (expired entries dropped), and how many."""
        _, live = await self._change(room_id, "add", [])
        return users_of(live, self.max_users)

    async def typing(
        self,
        room_id: int,
        user_id: int,
        name: str,
        *,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Tell the room's other sockets that ``user_id`` types; False when too soon
        after the last one (dropped).

        ``check`` (the sender's right to type, a database read) runs only for a
        frame that passed the throttle, so a client that floods typing frames
        costs one Redis command each and one read per interval; what it raises
        (``ClientError``) propagates, and nothing is published.
        """
        try:
            first = await self.client.set(
                typing_key(self.prefix, room_id, user_id),
                b"1",
                nx=True,
                px=max(1, int(self.typing_interval * 1000)),
            )
        except (redis.RedisError, OSError):
            logger.warning("presence: could not throttle typing in room %s", room_id, exc_info=True)
            return False
        if not first:
            return False
        if check is not None:
            await check()
        try:
            await self._publish(room_id, protocol.typing_frame(user_id=user_id, name=name))
        except (redis.RedisError, OSError):
            logger.warning("presence: could not announce typing in room %s", room_id, exc_info=True)
            return False
        return True

    async def typing_ended(self, room_id: int, user_id: int) -> None:
        """The user sent their message: their next keystroke may say "typing" at once."""
        try:
            await self.client.delete(typing_key(self.prefix, room_id, user_id))
        except (redis.RedisError, OSError):
            logger.warning("presence: could not reset typing in room %s", room_id, exc_info=True)
