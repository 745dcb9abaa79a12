"""Building room events and publishing row changes to the room's sockets.

Only services call this module, and only from ``transaction.on_commit``: nothing
reaches a browser that is not committed first.

Each event carries the finished JSON frame (``frame``) so that it is serialised
once, where the change happens, instead of once per socket. The frame is what
travels through Redis: one PUBLISH per change, on the room's channel, through
redis-py to ``CHAT_EVENTS_REDIS_URL`` (``REDIS_URL`` unless set); on a Redis
Cluster (``CHAT_EVENTS_REDIS_CLUSTER``) one SPUBLISH, to the room channel's shard
(``messages_app.realtime.subscriber``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
import redis.cluster
from django.conf import settings

from messages_app import protocol

logger = logging.getLogger(__name__)


def message_event(payload: dict[str, Any]) -> dict[str, Any]:
    """The group event for a row inserted or changed other than by an append."""
    return {
        "type": "message.changed",
        "id": payload["id"],
        "version": payload["version"],
        "frame": protocol.message_frame(payload),
    }


def delta_event(*, message_id: int, version: int, offset: int, text: str) -> dict[str, Any]:
    """The group event for ``text`` appended at ``offset`` by write ``version``."""
    return {
        "type": "message.delta",
        "id": message_id,
        "version": version,
        "offset": offset,
        "text": text,
        "frame": protocol.delta_frame(
            message_id=message_id, version=version, offset=offset, text=text
        ),
    }


def room_channel(room_id: int) -> str:
    """The Redis pub/sub channel of a room's events (``messages_app.realtime`` listens)."""
    return protocol.room_channel(settings.CHAT_REDIS_PREFIX, room_id)


def _publish(client: Any, channel: str, frame: str) -> None:
    if settings.CHAT_EVENTS_REDIS_CLUSTER:
        client.spublish(channel, frame)
    else:
        client.publish(channel, frame)


def send_to_room(room_id: int, event: dict[str, Any]) -> None:
    """Publish ``event`` to every socket watching the room. Call from sync code only.

    One PUBLISH of the finished frame on the room's channel; each web process
    subscribed to it fans it out to its own sockets (``messages_app.realtime``).
    A failure to publish is logged, not raised: the row is committed, and the
    sockets that miss the event converge through the heartbeat (hub.py).
    """
    try:
        _publish(_events_redis(), room_channel(room_id), event["frame"])
    except redis.RedisError:
        logger.exception("could not publish %s to room %s", event.get("type"), room_id)


def send_to_rooms(room_events: list[tuple[int, dict[str, Any]]]) -> None:
    """``send_to_room`` for each (room id, event), in order, in one Redis round trip."""
    if len(room_events) <= 1:
        for room_id, event in room_events:
            send_to_room(room_id, event)
        return
    try:
        client = _events_redis()
        if settings.CHAT_EVENTS_REDIS_CLUSTER:
            # one SPUBLISH per event, each to its channel's shard, in order
            for room_id, event in room_events:
                _publish(client, room_channel(room_id), event["frame"])
            return
        pipe = client.pipeline(transaction=False)
        for room_id, event in room_events:
            pipe.publish(room_channel(room_id), event["frame"])
        pipe.execute()
    except redis.RedisError:
        logger.exception("could not publish %s events", len(room_events))


def cancel_channel() -> str:
    """The Redis pub/sub channel on which workers hear that a reply was cancelled."""
    return f"{settings.CHAT_REDIS_PREFIX}:cancel"


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


@functools.cache
def _events_redis() -> Any:
    """The client room events and socket commands are published with."""
    if settings.CHAT_EVENTS_REDIS_CLUSTER:
        return redis.cluster.RedisCluster.from_url(
            settings.CHAT_EVENTS_REDIS_URL, socket_timeout=5, socket_connect_timeout=5
        )
    if settings.CHAT_EVENTS_REDIS_URL == settings.REDIS_URL:
        return _redis()
    return redis.Redis.from_url(
        settings.CHAT_EVENTS_REDIS_URL, socket_timeout=5, socket_connect_timeout=5
    )


def user_sockets_close(*, user_id: int, code: int, room_id: int | None = None) -> None:
    """Close ``user_id``'s sockets (all, or those of ``room_id``) on every web process.

    ``code`` is one of ``protocol.CLOSE_CODES``: 4401 when the session ended
    (logout, password change, deactivation), 4403 when the user was removed from
    the room. One PUBLISH on ``<prefix>:sockets``, which every web process's hub
    hears (within milliseconds) and acts on; the page shows why and stops
    reconnecting. Raises ``redis.RedisError`` if Redis cannot be reached: a
    session that must end must not end silently only in the database.
    """
    command = protocol.sockets_close_command(
        protocol.SocketsClose(user_id=user_id, code=code, room_id=room_id)
    )
    _publish(_events_redis(), protocol.command_channel(settings.CHAT_REDIS_PREFIX), command)


def announce_cancel(message_id: int) -> None:
    """Tell every worker that ``message_id`` was cancelled, so its stream closes now.

    Best effort: a worker that misses it still stops at its next write, which the
    row's status refuses.
    """
    try:
        _redis().publish(cancel_channel(), str(message_id))
    except redis.RedisError:
        logger.exception("could not announce the cancel of reply %s", message_id)
