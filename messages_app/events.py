"""Building group names and sending row changes to the room's sockets.

Only services call this module, and only from ``transaction.on_commit``: nothing
reaches a browser that is not committed first.

Each event carries the finished JSON frame (``frame``) so that it is serialised
once, where the change happens, instead of once per socket.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

_local = threading.local()


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def message_event(payload: dict[str, Any]) -> dict[str, Any]:
    """The group event for a row inserted or changed other than by an append."""
    return {
        "type": "message.changed",
        "id": payload["id"],
        "version": payload["version"],
        "frame": dumps({"type": "message", "message": payload}),
    }


def delta_event(*, message_id: int, version: int, offset: int, text: str) -> dict[str, Any]:
    """The group event for ``text`` appended at ``offset`` by write ``version``."""
    return {
        "type": "message.delta",
        "id": message_id,
        "version": version,
        "offset": offset,
        "text": text,
        "frame": dumps(
            {"type": "delta", "id": message_id, "version": version, "offset": offset, "text": text}
        ),
    }


def _thread_loop() -> asyncio.AbstractEventLoop:
    """One event loop per thread, kept for the thread's life.

    The channel layer keeps its Redis connection per event loop; a fresh loop per
    send (``async_to_sync`` in a plain thread) would reconnect every time and
    leave closed-loop connections behind (CONVENTIONS.md, pitfalls).
    """
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def send_to_room(room_id: int, event: dict[str, Any]) -> None:
    """Publish ``event`` to every socket watching the room. Call from sync code only.

    A failure to publish is logged, not raised: the row is committed, and a
    socket that misses the event sees the gap (by version) and resyncs.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        _thread_loop().run_until_complete(layer.group_send(room_group(room_id), event))
    except Exception:
        logger.exception("could not publish %s to room %s", event.get("type"), room_id)


def cancel_channel() -> str:
    """The Redis pub/sub channel on which workers hear that a reply was cancelled."""
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG'].get('prefix', 'chat')}:cancel"


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
