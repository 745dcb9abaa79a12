"""Hear cancels as they happen, so a worker closes the model's stream at once.

One listener thread per worker process subscribes to the Redis channel that
``messages_app.events.announce_cancel`` publishes to, and calls the callbacks
registered for that reply. A missed announcement costs only latency: the next
guarded write of the reply touches no row, and the run stops then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings

from messages_app.events import cancel_channel

logger = logging.getLogger(__name__)


class CancelListener:
    def __init__(self) -> None:
        self._callbacks: dict[int, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._subscribed = threading.Event()

    def register(self, message_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from the listener thread) if ``message_id`` is cancelled.

        Returns the function that unregisters it. Waits briefly for the
        subscription on first use, so a cancel right after is not missed.
        """
        with self._lock:
            self._callbacks.setdefault(message_id, []).append(callback)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, name="cancel-listener", daemon=True
                )
                self._thread.start()
        self._subscribed.wait(timeout=2)

        def unregister() -> None:
            with self._lock:
                callbacks = self._callbacks.get(message_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._callbacks.pop(message_id, None)

        return unregister

    def _notify(self, message_id: int) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(message_id, []))
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("cancel callback for reply %s failed", message_id)

    def _listen(self) -> None:
        while True:
            try:
                client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=10)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(cancel_channel())
                self._subscribed.set()
                for message in pubsub.listen():
                    try:
                        self._notify(int(message["data"]))
                    except (TypeError, ValueError):
                        logger.warning("ignoring a malformed cancel: %r", message.get("data"))
            except redis.RedisError as error:
                self._subscribed.clear()
                logger.warning("cancel listener lost Redis (%s); reconnecting", error)
                time.sleep(1)


listener = CancelListener()
