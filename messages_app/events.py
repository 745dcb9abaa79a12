"""Building room events and publishing row changes to the room's sockets.

Only services call this module, and only from ``transaction.on_commit``: nothing
reaches a browser that is not committed first.

Each event carries the finished JSON frame (``frame``) so that it is serialised
once, where the change happens, instead of once per socket. The frame is what
travels through Redis: one PUBLISH per change, on the room's channel.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
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
    """The Redis pub/sub channel of a room's events (``messages_app.fanout`` listens)."""
    return f"{settings.CHAT_REDIS_PREFIX}:room:{room_id}"


def send_to_room(room_id: int, event: dict[str, Any]) -> None:
    """Publish ``event`` to every socket watching the room. Call from sync code only.

    One PUBLISH of the finished frame on the room's channel; each web process
    subscribed to it fans it out to its own sockets (``messages_app.fanout``).
    A failure to publish is logged, not raised: the row is committed, and a
    socket that misses the event sees the gap (by version) and resyncs.
    """
    try:
        _redis().publish(room_channel(room_id), event["frame"])
    except redis.RedisError:
        logger.exception("could not publish %s to room %s", event.get("type"), room_id)


def send_to_rooms(room_events: list[tuple[int, dict[str, Any]]]) -> None:
    """``send_to_room`` for each (room id, event), in order, in one Redis round trip."""
    if len(room_events) <= 1:
        for room_id, event in room_events:
            send_to_room(room_id, event)
        return
    try:
        pipe = _redis().pipeline(transaction=False)
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


def announce_cancel(message_id: int) -> None:
    """Tell every worker that ``message_id`` was cancelled, so its stream closes now.

    Best effort: a worker that misses it still stops at its next write, which the
    row's status refuses.
    """
    try:
        _redis().publish(cancel_channel(), str(message_id))
    except redis.RedisError:
        logger.exception("could not announce the cancel of reply %s", message_id)
