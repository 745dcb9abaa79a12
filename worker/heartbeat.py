"""The heartbeat: proof, written to each streaming row, that its run is alive.

One thread per worker process writes ``heartbeat_at`` for every run of the
process every ``GPT_HEARTBEAT_INTERVAL`` seconds, in one UPDATE
(``services.replies_heartbeat``), whatever the run is doing: waiting for a quiet
model, retrying the model's request, retrying a write while the database is
away. The watchdog (``services.replies_fail_stale``) fails a streaming reply
whose heartbeat is older than ``GPT_STALE_AFTER``, so a reply is called
interrupted only when its worker has stopped, not when its text stops growing.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable

from django.conf import settings

from messages_app import services
from worker.dbretry import drop_connection

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self) -> None:
        self._runs: dict[int, uuid.UUID] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def register(self, message_id: int, attempt: uuid.UUID) -> Callable[[], None]:
        """Beat for the attempt ``attempt`` of reply ``message_id`` until the returned
        function is called (the run's end)."""
        with self._lock:
            self._runs[message_id] = attempt
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()

        def unregister() -> None:
            with self._lock:
                if self._runs.get(message_id) == attempt:
                    del self._runs[message_id]

        return unregister

    def beat(self) -> int:
        """One heartbeat for every run registered now; returns the rows written."""
        with self._lock:
            runs = list(self._runs.items())
        if not runs:
            return 0
        try:
            return services.replies_heartbeat(runs=runs)
        except Exception:
            # The database is away: the next beat tries again. Past GPT_STALE_AFTER
            # the watchdog may call the replies interrupted, which is then true.
            logger.exception("heartbeat of %s replies failed", len(runs))
            return 0
        finally:
            drop_connection()  # one short write every few seconds: no connection kept

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(settings.GPT_HEARTBEAT_INTERVAL):
            self.beat()


beats = Heartbeat()
